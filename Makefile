# Two commands: `make run` and `make test`. Everything else is a helper for those.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8501
export PYTHONPATH := $(CURDIR)

.PHONY: run test venv deps dev-deps services chromium migrate demo-if-empty lint bench loadtest clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.deps: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev-deps: requirements.txt requirements-dev.txt $(VENV)/.deps
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

deps: $(VENV)/.deps
dev-deps: $(VENV)/.dev-deps

migrate: deps
	$(BIN)/python -m metering init-db

demo-if-empty: migrate
	$(BIN)/python -m metering demo --if-empty

run: demo-if-empty
	$(BIN)/streamlit run app.py --server.port $(PORT) --server.headless true

services:
	bash scripts/ensure_postgres.sh

chromium:
	bash scripts/ensure_chromium.sh

lint: dev-deps
	$(BIN)/ruff check .

test: dev-deps services chromium
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

bench: dev-deps services
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) data/*.db

# 20 browser-like sessions against one local server, 60 s per think time (docs/performance.md "Load test")
loadtest: dev-deps chromium
	$(BIN)/python bench/load_test.py --sessions 20 --seconds 60 $(LOADTEST_ARGS)
