# Two entry points (see README.md): `make run` and `make test`. Both build .venv when it is missing or stale.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

DING := /usr/share/trans/de-en

.PHONY: run theory test test-all bench clean-venv ding

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

# The default test suite (no slow, no GPU tests); `make test-all` adds the slow ones.
test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

test-all: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m 'not gpu'

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/optimizer_step.py

clean-venv:
	rm -rf $(VENV)
