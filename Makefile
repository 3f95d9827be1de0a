# graphsentry: `make run` (set up + demo end to end) and `make test` (whole suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install bench test-llm clean docs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/graphsentry demo

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

# ruff (lint rules) and mypy (type check) on the packages, configured in pyproject.toml; tools: the dev extra
.PHONY: lint
$(VENV)/.installed-dev: $(STAMP) pyproject.toml
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check ingest knowledge detector training
	$(BIN)/mypy

# Render the figures in README.md and docs/ from reports/*.json (marked blocks; `--check` in the tests)
docs: $(STAMP)
	$(BIN)/python -m scripts.render_results

bench: $(STAMP)
	for b in benchmarks/*_bench.py; do $(BIN)/python $$b || exit 1; done

# Real local LLM (opt-in): uses GRAPHSENTRY_LLM_URL if it answers, else starts scripts/llm_server.sh on a free
# 127.0.0.1 port and stops it. One-time setup: GRAPHSENTRY_LLM_HOME=DIR scripts/llm_server.sh setup
test-llm: $(STAMP)
	GRAPHSENTRY_LLM_TESTS=1 GRAPHSENTRY_LLM_SERVER_CMD="$${GRAPHSENTRY_LLM_SERVER_CMD:-scripts/llm_server.sh serve {port}}" \
		$(BIN)/python -m pytest -q -rs tests/knowledge -k llm_real

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
