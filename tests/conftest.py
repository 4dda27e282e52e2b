"""Shared fixtures: quiet TensorFlow, synthetic datasets made on the fly, the optional shared dataset, and the
tiny model (``tests/tiny_model.py``) built once per session for every folder's tests, with its loaded
classifiers and reference outputs."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from tests import tiny_model
from tests.tiny_model import MODEL_NAME, make_settings

if TYPE_CHECKING:
    from service.inference.classifier import Classifier

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "brain-tumor-mri"


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory: pytest.TempPathFactory):
    """A small generated train/test pair with planted exact, near and cross-label duplicates."""
    from tests.synthetic import make_dataset

    return make_dataset(tmp_path_factory.mktemp("synthetic"), per_class=24, test_per_class=6)


@pytest.fixture(scope="session")
def shared_dataset() -> Path:
    """The real dataset beside the checkout; tests using it are an optional extra (skipped without it)."""
    if not (SHARED_DATA / "Training").is_dir():
        pytest.skip("optional: ../shared/data/brain-tumor-mri is not present")
    return SHARED_DATA


# The tiny model's fixtures live here, and only here: a session fixture defined (or imported) in two conftest
# files, or aliased in a test module, is a second fixture that fits and exports the model again.


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<root>/1/``: the tiny model with the ``ood_score`` output, fitted and exported once per session."""
    root = tmp_path_factory.mktemp("models") / MODEL_NAME
    tiny_model.build(root, root.parent / "legacy" / MODEL_NAME)
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


@pytest.fixture(scope="session")
def tf_classifier(model_root: Path) -> Classifier:
    from service.inference.classifier import Classifier

    classifier = Classifier(make_settings(model_root))
    assert classifier.load(), classifier.reason
    return classifier


@pytest.fixture(scope="session")
def ov_classifier(model_root: Path) -> Classifier:
    from service.inference.classifier import Classifier

    classifier = Classifier(make_settings(model_root, runtime="openvino"))
    assert classifier.load(), classifier.reason
    return classifier


@pytest.fixture(scope="session")
def expected(model_root: Path) -> Callable[[np.ndarray], np.ndarray]:
    """Reference probabilities for model inputs [N, S, S, 3]: the exported SavedModel's ``serving_default``
    called directly with TensorFlow, not through the service's runtime, classifier, TTA or batcher."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(model_root / "1")).signatures["serving_default"]
    return lambda images: signature(images=tf.constant(np.asarray(images, dtype=np.float32)))["probabilities"].numpy()
