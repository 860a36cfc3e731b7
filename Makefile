# Quick start: `make demo` runs the main job, `make test` runs the whole test suite.
# Both create the environment (.venv, system packages when root) when it is missing.
VENV ?= .venv
STAMP := $(VENV)/.dnas-installed

.PHONY: demo test setup bench

$(STAMP): pyproject.toml scripts/setup.sh
	VENV=$(VENV) bash scripts/setup.sh
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dnas profile densenet-bc-100

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/bench_space.py
