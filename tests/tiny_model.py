"""The tiny model every service, reliability and training test serves: its metadata, the test settings, and how
it is fitted and exported (once per session, by the fixtures of ``tests/conftest.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from service.config import Settings
from service.imaging.preprocessing import PreprocessConfig
from service.labels import CLASSES

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


def build(root: Path, legacy_root: Path) -> None:
    """Fit the tiny backbone for a few steps on generated slices (so that its answers differ from image to image,
    as a trained model's do) and export it with the real export code: to ``root/1`` with the "unlike the training
    images" output (its bank fitted on these training images), and to ``legacy_root/1`` without that output (as
    models were exported before it existed)."""
    import keras

    from service.imaging.preprocessing import to_model_input
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
    export_model(model, root, metadata(), temperature=1.0, version=1, ood_bank=embed(model, x), ood_k=5)
    export_model(model, legacy_root, metadata(), temperature=1.0, version=1)
