# The README's two commands: `make run` and `make test`. Everything else is a helper.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run demo serve test setup web lint bench clean FORCE

# Idempotent: the venv is made once; torch 2.13.0 goes in first (else pip would pull a
# multi-GB CUDA build as a dependency); the project is re-installed when pyproject changes.
$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

# The web studio: the typed client is generated from the API's OpenAPI spec, then Vite
# builds the bundle into saestudio/web/ (served by `saestudio serve` at /). Rebuilt only
# when the frontend sources or the API change.
WEB := saestudio/web/index.html
FRONTEND_SRC := $(shell find frontend/src frontend/index.html frontend/*.ts frontend/*.js frontend/*.json -type f 2>/dev/null | grep -v node_modules)

frontend/node_modules/.installed: frontend/package.json frontend/package-lock.json
	cd frontend && npm ci --no-audit --no-fund
	@touch $@

# always asked, rewritten only when the API's spec differs (so a fresh clone's file times
# never leave a stale client)
frontend/openapi.json: $(STAMP) FORCE
	@$(BIN)/python scripts/openapi.py $@

FORCE:

# generated, never committed or edited: the client's types follow the spec
frontend/src/api/schema.d.ts: frontend/node_modules/.installed frontend/openapi.json
	cd frontend && npm run gen

$(WEB): frontend/src/api/schema.d.ts $(FRONTEND_SRC)
	cd frontend && npm run build

web: $(WEB)

# the studio on http://127.0.0.1:8000: API + one local worker, SQLite and the SQLite broker
# under data/ (nothing to install), with the packaged demo activation dataset
run: setup web
	$(BIN)/saestudio serve --demo

serve: setup web
	$(BIN)/saestudio serve

# the terminal demo: extract MiniLM activations and train a TopK SAE with a progress bar
demo: setup
	$(BIN)/saestudio demo --out runs/demo

# the frontend's unit tests (Vitest), then everything else, the browser suite included
test: setup web
	cd frontend && npm test
	$(BIN)/python -m pytest -q

lint: setup web
	$(BIN)/ruff check saestudio tests bench
	$(BIN)/mypy
	cd frontend && npm run typecheck

bench: setup
	$(BIN)/python bench/train_throughput.py

clean:
	rm -rf runs .pytest_cache
