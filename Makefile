# The two commands: `make demo` (set up, start the embedded stack, run the main job) and
# `make test` (lint, types, then the whole suite, integration tests included). Both install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DURATION ?= 60

.PHONY: setup demo test check stack-up stack-down bench clean

$(BIN)/safewatch: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

setup: $(BIN)/safewatch
	$(BIN)/safewatch stack install

demo: setup
	$(BIN)/safewatch demo --duration $(DURATION)

check: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: check
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

stack-up: setup
	$(BIN)/safewatch stack up

stack-down:
	$(BIN)/safewatch stack down

bench: setup
	$(BIN)/safewatch bench

clean:
	-$(BIN)/safewatch stack down
	rm -rf $(VENV) .safewatch
