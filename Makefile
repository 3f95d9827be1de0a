# graphsentry: `make run` (set up + demo end to end) and `make test` (whole suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install bench test-llm clean

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

bench: $(STAMP)
	for b in benchmarks/*_bench.py; do $(BIN)/python $$b || exit 1; done

test-llm: $(STAMP)
	GRAPHSENTRY_LLM_TESTS=1 $(BIN)/python -m pytest -q tests/knowledge -k llm_real

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
