# mri-classifier: one Makefile for set-up, tests, the service and the training job.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
MODEL_DIR ?= models/mri-classifier
PORT ?= 8080

.PHONY: venv run test test-fast lint typecheck train evaluate clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

run: venv  ## serve the shipped model on http://127.0.0.1:$(PORT)
	$(VENV)/bin/mri-classifier serve --model-dir $(MODEL_DIR) --port $(PORT)

lint: venv
	$(VENV)/bin/ruff check service training tests benchmarks
	$(VENV)/bin/ruff format --check service training tests benchmarks

typecheck: venv
	$(VENV)/bin/mypy

test: venv lint typecheck  ## everything CI runs: lint, types, the whole test suite (slow tests included)
	$(VENV)/bin/pytest

test-fast: venv
	$(VENV)/bin/pytest -m "not slow"

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
