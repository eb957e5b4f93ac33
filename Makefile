# Two entry points (see README.md): `make run` and `make test`. Both build .venv when it is missing or stale.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

DING := /usr/share/trans/de-en

.PHONY: run theory test test-all bench clean-venv ding fairseq-check heldout-bible

$(STAMP): pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet -c constraints.txt -e '.[experiments,test]'
	touch $(STAMP)

# The main job on the embedded default: the NMT task on the Ding corpus, offline, CPU (see README.md).
run: $(STAMP) ding
	$(VENV)/bin/python run.py

# Paper Figs. 8 and 9 (theory, no training) into results/.
theory: $(STAMP)
	$(VENV)/bin/python scripts/theory_figures.py

# The Ding dictionary (Debian package trans-de-en): installed with apt when we are root; otherwise the task
# downloads the upstream file on first use.
ding:
	@if [ ! -f $(DING) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq trans-de-en >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq trans-de-en; }; fi

# The held-out corpus of the plateau-warning evaluation (results/plateau_heldout.md): Es-En Bible verses from
# Debian's SWORD modules (Reina-Valera 1909, World English Bible) and SWORD's mod2imp, installed with apt when we
# are root, written into data/raw_bible_es_en by the script (which names the packages if they are missing).
heldout-bible: BIBLE_PACKAGES := sword-text-sparv sword-text-web libsword-utils
heldout-bible:
	@if ! dpkg -s $(BIBLE_PACKAGES) >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BIBLE_PACKAGES) >/dev/null 2>&1 || \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BIBLE_PACKAGES); }; \
	  else echo "heldout-bible: needs the Debian packages $(BIBLE_PACKAGES); install them as root (apt-get install)"; fi; fi
	$(PYTHON) scripts/plateau_bible_corpus.py data/raw_bible_es_en

# The default test suite (no slow, no GPU tests); `make test-all` adds the slow ones.
test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

test-all: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m 'not gpu'

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/optimizer_step.py

clean-venv:
	rm -rf $(VENV)

# fairseq in its own venv (it pins hydra-core 1.3.2; docs/fairseq.md), built once (~4 min), then the
# equivalence suite (tests/equivalence/, marker fairseq) and the plugin's tests against fairseq's own code.
FAIRSEQ_VENV := .venv-fairseq
FAIRSEQ_STAMP := $(FAIRSEQ_VENV)/.installed

$(FAIRSEQ_STAMP): constraints.txt
	test -x $(FAIRSEQ_VENV)/bin/python || $(PYTHON) -m venv $(FAIRSEQ_VENV)
	$(FAIRSEQ_VENV)/bin/python -m pip install --quiet torch==2.14.1 numpy==2.4.6 cython
	$(FAIRSEQ_VENV)/bin/python -m pip install --quiet --no-build-isolation fairseq-fixed==0.12.3.1
	$(FAIRSEQ_VENV)/bin/python -m pip install --quiet --no-deps -e .
	$(FAIRSEQ_VENV)/bin/python -m pip install --quiet pytest sacremoses==0.2.0 subword-nmt==0.3.8 sacrebleu
	touch $(FAIRSEQ_STAMP)

# The Ding corpus is prepared once into $$RADAM_DATA/ding (default ./data, as run.py). tests/conftest.py needs the
# harness's dependencies, which this venv lacks: --confcutdir keeps pytest to tests/equivalence/conftest.py.
fairseq-check: $(FAIRSEQ_STAMP) ding
	RADAM_DATA=$${RADAM_DATA:-data} $(FAIRSEQ_VENV)/bin/python -m pytest -q -m 'not gpu' \
	  --confcutdir tests/equivalence tests/equivalence tests/test_fairseq_plugin.py
