# The two commands: `make demo` (set up, start the embedded stack, run the main job) and
# `make test` (lint, types, then the whole suite, integration tests included). Both install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DURATION ?= 60

.PHONY: setup demo test check compose-check stack-up stack-down bench bench-quix clean

$(BIN)/safewatch: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

setup: $(BIN)/safewatch
	$(BIN)/safewatch stack install

demo: setup
	$(BIN)/safewatch demo --duration $(DURATION)

check: setup compose-check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The production compose file must parse with Debian's docker-compose (no daemon needed for
# `config`); placeholder secrets stand in for the ones a deployment sets.
compose-check:
	@command -v docker-compose >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker-compose)
	SAFEWATCH_INFLUX_TOKEN=check INFLUX_ADMIN_PASSWORD=check GRAFANA_ADMIN_PASSWORD=check docker-compose config -q

test: check
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

stack-up: setup
	$(BIN)/safewatch stack up

stack-down:
	$(BIN)/safewatch stack down

bench: setup
	$(BIN)/safewatch bench

# The per-message peer of the bench: quixstreams pins pydantic below safewatch's floor, so it gets a venv of its own.
.venv-quix/bin/python:
	$(PYTHON) -m venv .venv-quix
	.venv-quix/bin/pip install -q 'quixstreams>=3.28'

bench-quix: setup .venv-quix/bin/python
	$(BIN)/safewatch bench --quix-python .venv-quix/bin/python

clean:
	-$(BIN)/safewatch stack down
	rm -rf $(VENV) .venv-quix .safewatch
