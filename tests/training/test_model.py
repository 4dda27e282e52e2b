"""The classifier's structure: input contract, head, backbone selection and partial fine-tuning."""

from __future__ import annotations

import numpy as np
import pytest

from training.model import FEATURE_LAYER, LOGITS_LAYER, backbone_layers, build_model, resolve_weights
from training.train import _first_trainable


def test_model_contract():
    model = build_model(32, backbone="tiny")
    assert tuple(model.input.shape) == (None, 32, 32, 3)
    assert model.get_layer(LOGITS_LAYER).units == 4
    assert model.get_layer(FEATURE_LAYER) is not None
    probs = model.predict(np.full((2, 32, 32, 3), 255.0, np.float32), verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)


def test_weights_option():
    assert resolve_weights("none") is None
    assert resolve_weights("imagenet") == "imagenet"
    with pytest.raises(FileNotFoundError, match="no such weights file"):
        resolve_weights("/nonexistent/weights.h5")
    with pytest.raises(ValueError, match="unknown backbone"):
        build_model(32, backbone="resnet50")


def test_fine_tune_from_picks_the_first_matching_layer():
    layers = backbone_layers(build_model(32, backbone="tiny"))
    assert _first_trainable(layers, None) == 0
    assert layers[_first_trainable(layers, "conv2")].name == "conv2"
    with pytest.raises(ValueError, match="no backbone layer"):
        _first_trainable(layers, "block9z")
