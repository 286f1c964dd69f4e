# Two commands do all the set-up on a fresh machine:
#   make demo   - install, then validate, plan and apply sample-repo/ into .state/sample.duckdb
#   make test   - install, then lint, type-check and run the test suite (what CI runs)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/reconcile validate --repo sample-repo
	$(BIN)/reconcile --plan --repo sample-repo --state .state/sample.duckdb
	$(BIN)/reconcile apply --repo sample-repo --state .state/sample.duckdb --auto-approve
	$(BIN)/reconcile revisions --state .state/sample.duckdb

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) .state .mypy_cache .ruff_cache .pytest_cache
