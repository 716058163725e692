# chatbus — `make help` lists the targets. Everything runs from a venv in .venv; services keep
# their state under .chatbus/ and large downloads under ~/.cache/chatbus.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Every extra of pyproject.toml resolved to exact versions (`make lock`): installs take them as
# constraints, so `make install`, CI, the images and the install test get the same set.
LOCK := requirements.lock
# uv installs into .venv by hard-linking files from its cache (~/.cache/uv): torch's CUDA wheels
# from PyPI take ~8 GB once, not once in the cache and again in every checkout's .venv.
UV_REQ := uv>=0.9,<1
MIN_FREE_GB ?= 9
# The CPU engine: llama-cpp-python is source-only on PyPI, so its wheel is built once per machine.
LLAMA_CPP_REQ := llama-cpp-python==0.3.36
CHATBUS_CACHE := $(or $(CHATBUS_CACHE_DIR),$(HOME)/.cache/chatbus)
LOCAL_WHEELS := $(CHATBUS_CACHE)/wheels
UV_CACHE := $(or $(UV_CACHE_DIR),$(if $(XDG_CACHE_HOME),$(XDG_CACHE_HOME)/uv),$(HOME)/.cache/uv)
UV := $(BIN)/uv
# uv reads no pip.conf: pip's index and wheel-folder settings from the environment carry over
# (a wheel folder that does not exist is skipped, as pip skips it).
UV_FLAGS := --python $(BIN)/python \
  $(foreach d,$(PIP_FIND_LINKS),$(if $(or $(findstring ://,$(d)),$(wildcard $(d))),--find-links $(d))) \
  $(if $(PIP_INDEX_URL),--index-url $(PIP_INDEX_URL)) \
  $(foreach u,$(PIP_EXTRA_INDEX_URL),--extra-index-url $(u)) \
  $(if $(filter 1 true yes on,$(PIP_NO_INDEX)),--no-index)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1

.DEFAULT_GOAL := help
.PHONY: help install lock model up down status topics run pipeline-up pipeline-down test test-unit \
        lint schemas check-schemas chat clean faults soak fuzz bench bench-inference bench-transport bench-archiver bench-analytics bench-ledger bench-history bench-moderation \
        report

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(UV):
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11" >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q '$(UV_REQ)'

$(STAMP): pyproject.toml $(LOCK) infra/local/llama_cpp_wheel.sh | $(UV)
	@echo "==> installing chatbus and its dependencies into $(VENV) (first time: a minute or two)"
	@infra/local/disk_check.sh "$(UV_CACHE)" $(MIN_FREE_GB)
	@infra/local/llama_cpp_wheel.sh "$(LOCAL_WHEELS)" "$(LLAMA_CPP_REQ)" $(BIN)/python
	@$(UV) pip install $(UV_FLAGS) --find-links $(LOCAL_WHEELS) -c $(LOCK) \
	  --reinstall-package llama-cpp-python -e '.[dev,llama]'
	@$(UV) pip check --python $(BIN)/python
	@touch $@

install: $(STAMP) ## Create .venv and install chatbus with every extra, at the versions of requirements.lock

lock: | $(UV) ## Re-resolve requirements.lock (every extra) after editing pyproject.toml's dependencies
	@$(UV) pip compile pyproject.toml --all-extras --universal --python-version 3.11 $(UV_FLAGS) \
	  --find-links $(LOCAL_WHEELS) --custom-compile-command 'make lock' -o $(LOCK)

model: install ## Build the models offline into ~/.cache/chatbus: SmolLM2-135M-Instruct and chatbus-tiny
	@$(BIN)/chatbus model build

up: install ## Install what is missing and start Kafka, Redis, FerretDB and S3 (idempotent)
	@$(BIN)/chatbus infra up

down: ## Stop everything this checkout started (pipeline and services), by PID
	@if [ -x $(BIN)/chatbus ]; then $(BIN)/chatbus infra down; else echo "nothing installed"; fi

status: install ## Every local service and pipeline component, healthy or not
	@$(BIN)/chatbus ops status

pipeline-up: install ## Start the supervisor: processors, archiver, inference worker(s), gateway
	@$(BIN)/chatbus pipeline up

pipeline-down: install ## Stop the pipeline: gateway first, workers drain, processors last
	@$(BIN)/chatbus pipeline down

run: model up pipeline-up ## Install, start services and pipeline, stream a demo answer
	@echo "==> streaming an answer from $${CHATBUS_MODEL_NAME:-smollm2-135m-instruct}"
	@$(BIN)/chatbus chat "What is the capital of France?" --max-tokens 48 --timeout 180
	@echo
	@echo "chatbus is running in the background."
	@echo "  chat:    $(BIN)/chatbus chat \"your question\"   (or: source $(BIN)/activate)"
	@echo "  web UI:  http://$${CHATBUS_GATEWAY_HOST:-127.0.0.1}:$${CHATBUS_GATEWAY_PORT:-8000}/  (sign in with an API key)"
	@echo "  gateway: http://$${CHATBUS_GATEWAY_HOST:-127.0.0.1}:$${CHATBUS_GATEWAY_PORT:-8000}/v1  (OpenAI-compatible)"
	@echo "  API key: $(BIN)/chatbus keys create --user $${USER:-alice}   (shown once; send as Authorization: Bearer ...)"
	@echo "  status:  make status   (scale: chatbus ops scale worker --replicas 2; lag: chatbus ops lag)"
	@echo "  archive: chatbus archive verify; analytics: chatbus analytics report"
	@echo "  logs:    .chatbus/logs/"
	@echo "  stop:    make down"

chat: install ## Ask something: make chat PROMPT="..."
	@$(BIN)/chatbus chat "$${PROMPT:-Hello}"

test: model ## Run the whole suite (starts the services it needs, stops what it started)
	@$(BIN)/python -m pytest

test-unit: install ## Run the unit tests only (no services)
	@$(BIN)/python -m pytest tests/unit

lint: install ## ruff (lint and format), mypy (packages and tests) and the import layers (import-linter)
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .
	@$(BIN)/mypy
	@$(BIN)/lint-imports --no-cache

schemas: install ## Export the events' JSON Schema to schemas/json
	@$(BIN)/chatbus schemas

check-schemas: install ## Fail when schemas/json is stale
	@$(BIN)/chatbus schemas --check

bench: bench-inference bench-transport bench-archiver bench-analytics bench-ledger bench-history bench-moderation ## Every benchmark (results: docs/benchmarks.md, .chatbus/bench/)

bench-inference: model up ## Inference: engine ceiling, transformers serve, llama.cpp server, chatbus via gateway and bus (BENCH_ARGS=--quick)
	@$(UV) pip install -q $(UV_FLAGS) --find-links $(LOCAL_WHEELS) -c $(LOCK) -e '.[dev,llama,bench]'
	@$(BIN)/python -m benchmarks.inference $(BENCH_ARGS)

bench-transport: model up ## Responses API: first event over SSE vs the WebSocket, and resuming a stream (user path)
	@$(UV) pip install -q $(UV_FLAGS) --find-links $(LOCAL_WHEELS) -c $(LOCK) -e '.[dev,llama,bench]'
	@$(BIN)/python -m benchmarks.transport $(TRANSPORT_BENCH_ARGS)

faults: model up ## The fault suite: each service killed under load, every request audited (FAULTS_ARGS=--faults worker-kill,redis-down)
	@$(UV) pip install -q $(UV_FLAGS) --find-links $(LOCAL_WHEELS) -c $(LOCK) -e '.[dev,llama,bench]'
	@$(BIN)/python -m benchmarks.faults $(FAULTS_ARGS)

soak: model up ## The soak: 20 minutes of steady load on the default pipeline; memory, fds, lag over time (SOAK_ARGS=--minutes 5)
	@$(UV) pip install -q $(UV_FLAGS) --find-links $(LOCAL_WHEELS) -c $(LOCK) -e '.[dev,llama,bench]'
	@$(BIN)/python -m benchmarks.soak $(SOAK_ARGS)

fuzz: model up ## Fuzz the gateway from its OpenAPI schema (schemathesis, every phase; FUZZ_EXAMPLES=100 cases per operation)
	@CHATBUS_FUZZ_EXAMPLES=$(or $(FUZZ_EXAMPLES),100) CHATBUS_FUZZ_PHASES=examples,coverage,fuzzing,stateful \
	  $(BIN)/pytest tests/integration/test_gateway_fuzz.py -p no:cacheprovider -s -q --timeout=3600

bench-moderation: model up ## Moderation on the user's path: the held-back evaluation cases through a private pipeline's gateway
	@$(BIN)/python -m benchmarks.moderation_gateway $(MODERATION_BENCH_ARGS)

bench-archiver: up ## Archiver: events/s vs a bare consumer, sustained rate with bounded lag
	@$(BIN)/python -m benchmarks.archiver $(ARCHIVER_BENCH_ARGS)

bench-ledger: up ## Usage ledger: rows/s written exactly once to PostgreSQL vs a bare consumer
	@$(BIN)/python -m benchmarks.ledger $(LEDGER_BENCH_ARGS)

bench-history: up ## History store: lookups by _id as the collection grows, FerretDB alone vs with chatbus's lookup indexes
	@$(BIN)/python -m benchmarks.history_lookup $(HISTORY_BENCH_ARGS)

bench-analytics: install ## Analytics: the five Spark jobs over 1 million archived events
	@$(BIN)/python -m benchmarks.analytics $(ANALYTICS_BENCH_ARGS)

report: install ## The analytics report over the archive (HTML with charts)
	@$(BIN)/chatbus analytics report

clean: down ## Stop everything and remove .chatbus state (keeps the download cache)
	@if [ -L .chatbus/postgres/data ]; then rm -rf "$$(readlink -f .chatbus/postgres/data)"; fi
	@rm -rf .chatbus
