# Quick start: `make demo` runs the main job, `make test` runs the whole test suite.
# Both create the environment (.venv, system packages when root) when it is missing.
VENV ?= .venv
STAMP := $(VENV)/.dnas-installed

.PHONY: demo test lint setup bench

TEST_STAMP := $(VENV)/.dnas-test-installed

$(STAMP): pyproject.toml scripts/setup.sh
	VENV=$(VENV) bash scripts/setup.sh
	touch $(STAMP)

$(TEST_STAMP): $(STAMP) pyproject.toml
	VENV=$(VENV) bash scripts/setup.sh --test
	touch $(TEST_STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dnas search --budget 1M-params --budget 20M-flops --dataset fashion-mnist \
	    --train-subset 20000 --val-size 2000 --epochs 3 --workers 2 --timeout 8m

test: lint
	$(VENV)/bin/python -m pytest -q

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/bench_space.py
