# The engine's Makefile. `make help` (the default) lists every target.
# The two a newcomer needs: `make run` (start the engine) and `make test` (run the tests).
# Both create the virtual environment they need in .venv/ on first use.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The venv is rebuilt when the package's dependencies change.
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

.PHONY: help
help: ## List every target with one line each
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

.PHONY: venv
venv: $(STAMP) ## Create .venv and install the engine with its test dependencies

.PHONY: run
run: $(STAMP) ## Run the engine (routes.yaml, backends from the environment)
	$(BIN)/engine serve

.PHONY: test
test: $(STAMP) ## Run the test suite
	$(BIN)/pytest

.PHONY: lint-routes
lint-routes: $(STAMP) ## Check routes.yaml and the prompt files
	$(BIN)/engine lint routes.yaml
