# Two entry points (see README.md): `make run` and `make test`. Both build .venv when it is missing or stale.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run test test-all bench clean-venv

$(STAMP): pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet -c constraints.txt -e '.[experiments,test]'
	touch $(STAMP)

# The main job on the embedded default: offline, CPU.
run: $(STAMP)
	$(VENV)/bin/python scripts/theory_figures.py

# The default test suite (no slow, no GPU tests); `make test-all` adds the slow ones.
test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

test-all: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m 'not gpu'

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/optimizer_step.py

clean-venv:
	rm -rf $(VENV)
