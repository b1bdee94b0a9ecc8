# The README's two commands: `make run` and `make test`. Everything else is a helper.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run demo serve test setup lint bench clean

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

# the studio on http://127.0.0.1:8000: API + one local worker, SQLite and the SQLite broker
# under data/ (nothing to install), with the packaged demo activation dataset
run: setup
	$(BIN)/saestudio serve --demo

serve: setup
	$(BIN)/saestudio serve

# the terminal demo: extract MiniLM activations and train a TopK SAE with a progress bar
demo: setup
	$(BIN)/saestudio demo --out runs/demo

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check saestudio tests bench
	$(BIN)/mypy

bench: setup
	$(BIN)/python bench/train_throughput.py

clean:
	rm -rf runs .pytest_cache
