# Quick start: `make demo` runs the main job, `make test` runs the whole test suite.
# Both create the environment (.venv, system packages when root) when it is missing.
VENV ?= .venv
STAMP := $(VENV)/.dnas-installed

.PHONY: demo test setup bench

TEST_STAMP := $(VENV)/.dnas-test-installed

$(STAMP): pyproject.toml scripts/setup.sh
	VENV=$(VENV) bash scripts/setup.sh
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	VENV=$(VENV) bash scripts/setup.sh --test
	touch $(TEST_STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dnas profile densenet-bc-100

test: $(TEST_STAMP)
	$(VENV)/bin/python -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/bench_space.py
