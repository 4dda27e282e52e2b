"""Fixtures for the service tests: a real tiny SavedModel exported once per session, loaded classifiers,
settings and test clients (opened with ``with TestClient(app)`` so the lifespan runs)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from service.app import create_app
from service.classifier import Classifier
from service.config import Settings
from service.labels import CLASSES
from service.preprocessing import PreprocessConfig

IMAGE_SIZE = 32
MODEL_NAME = "mri-classifier"
DATA_FINGERPRINT = "5eed" * 16  # the SHA-256 the training job writes of its file list


def metadata() -> dict[str, Any]:
    """Metadata like the training job writes (export adds version, temperature and signatures)."""
    return {
        "model_name": MODEL_NAME,
        "classes": list(CLASSES),
        "preprocessing": PreprocessConfig(image_size=IMAGE_SIZE).to_dict(),
        "backbone": "tiny",
        "trained_at": "2026-01-01T00:00:00Z",
        "dataset": {"name": "synthetic", "train_images": 0},
        "data": {"fingerprint": DATA_FINGERPRINT},
        "metrics": {"val_accuracy": 0.25},
    }


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<root>/1/``: the tiny backbone, fitted for a few steps on generated slices (so that its answers
    differ from image to image, as a trained model's do) and exported by the real export code."""
    import keras

    from service.preprocessing import to_model_input
    from tests.service.images import mri_slice
    from training.export import export_model
    from training.model import build_model
    from training.ood_score import embed

    keras.utils.set_random_seed(7)
    config = PreprocessConfig(image_size=IMAGE_SIZE)
    labels = np.arange(192) % len(CLASSES)
    x = np.stack([to_model_input(mri_slice(1000 + i, size=64, cls=int(c)), config) for i, c in enumerate(labels)])
    model = build_model(image_size=IMAGE_SIZE, backbone="tiny", dropout=0.0)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(x.astype("float32"), labels, epochs=8, batch_size=32, verbose=0)
    root = tmp_path_factory.mktemp("models") / MODEL_NAME
    # with the "unlike the training images" output, its bank fitted on these training images
    export_model(model, root, metadata(), temperature=1.0, version=1, ood_bank=embed(model, x), ood_k=5)
    # the same weights exported as models were before that output existed
    export_model(model, root.parent / "legacy" / MODEL_NAME, metadata(), temperature=1.0, version=1)
    return root


@pytest.fixture(scope="session")
def legacy_root(model_root: Path) -> Path:
    """The tiny model exported without the ``ood_score`` output (as version 2 of the shipped model was)."""
    return model_root.parent / "legacy" / MODEL_NAME


@pytest.fixture(scope="session")
def mismatched_root(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same model whose metadata lists the classes in another order."""
    root = tmp_path_factory.mktemp("mismatch") / MODEL_NAME
    shutil.copytree(model_root / "1", root / "1")
    meta_path = root / "1" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["classes"] = ["meningioma", "glioma", "no_tumor", "pituitary"]
    meta_path.write_text(json.dumps(meta))
    return root


def make_settings(model_dir: Path, **overrides: Any) -> Settings:
    """Test settings: TensorFlow (the reference runtime), small batches and queues, no .env file."""
    base: dict[str, Any] = {
        "model_dir": model_dir,
        "runtime": "tensorflow",
        "max_batch_size": 4,
        "max_wait_ms": 2.0,
        "max_queue_size": 16,
        "max_images_per_request": 8,
    }
    return Settings(_env_file=None, **{**base, **overrides})  # type: ignore[call-arg]


@pytest.fixture(scope="session")
def tf_classifier(model_root: Path) -> Classifier:
    classifier = Classifier(make_settings(model_root))
    assert classifier.load(), classifier.reason
    return classifier


@pytest.fixture(scope="session")
def ov_classifier(model_root: Path) -> Classifier:
    classifier = Classifier(make_settings(model_root, runtime="openvino"))
    assert classifier.load(), classifier.reason
    return classifier


@pytest.fixture
def open_client() -> Iterator[Callable[..., TestClient]]:
    """``open_client(settings, classifier, **client_kwargs)`` -> a started TestClient, closed after the test."""
    with ExitStack() as stack:

        def _open(settings: Settings, classifier: Classifier | None = None, **kwargs: Any) -> TestClient:
            return stack.enter_context(TestClient(create_app(settings, classifier), **kwargs))

        yield _open


@pytest.fixture
def client(open_client: Callable[..., TestClient], model_root: Path, tf_classifier: Classifier) -> TestClient:
    """A client of the service with the loaded TensorFlow classifier."""
    return open_client(make_settings(model_root), tf_classifier)


@pytest.fixture(scope="session")
def expected(model_root: Path) -> Callable[[np.ndarray], np.ndarray]:
    """Reference probabilities for model inputs [N, S, S, 3]: the exported SavedModel's ``serving_default``
    called directly with TensorFlow, not through the service's runtime, classifier, TTA or batcher."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(model_root / "1")).signatures["serving_default"]
    return lambda images: signature(images=tf.constant(np.asarray(images, dtype=np.float32)))["probabilities"].numpy()
