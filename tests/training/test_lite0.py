"""EfficientNet-Lite0 backbone and its weight port, without torch or the real weights file.

The numerical check against the PyTorch reference lives in ``make lite0-weights`` (``--verify``).
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from training import lite0, port_lite0
from training.model import FEATURE_LAYER, build_model


@pytest.fixture(scope="module")
def backbone() -> keras.Model:
    return lite0.efficientnet_lite0(keras.Input((64, 64, 3)))


def fake_torch_state(seed: int = 0) -> dict[str, np.ndarray]:
    """A state dict with the reference model's keys and shapes (built from the block spec, torch layout)."""
    rng = np.random.default_rng(seed)
    state: dict[str, np.ndarray] = {}

    def bn(prefix: str, n: int) -> None:
        for suffix in ("weight", "bias", "running_mean"):
            state[prefix + suffix] = rng.normal(size=n).astype(np.float32)
        state[prefix + "running_var"] = rng.uniform(0.5, 2.0, size=n).astype(np.float32)

    state["_conv_stem.weight"] = rng.normal(size=(32, 3, 3, 3)).astype(np.float32)
    bn("_bn0.", 32)
    i = 0
    for spec in lite0.STAGES:
        for r in range(spec.repeats):
            cin = spec.filters_in if r == 0 else spec.filters_out
            mid = cin * spec.expand
            p = f"_blocks.{i}."
            if spec.expand != 1:
                state[p + "_expand_conv.weight"] = rng.normal(size=(mid, cin, 1, 1)).astype(np.float32)
                bn(p + "_bn0.", mid)
            state[p + "_depthwise_conv.weight"] = rng.normal(size=(mid, 1, spec.kernel, spec.kernel)).astype(np.float32)
            bn(p + "_bn1.", mid)
            state[p + "_project_conv.weight"] = rng.normal(size=(spec.filters_out, mid, 1, 1)).astype(np.float32)
            bn(p + "_bn2.", spec.filters_out)
            i += 1
    assert i == 16
    state["_conv_head.weight"] = rng.normal(size=(1280, 320, 1, 1)).astype(np.float32)
    bn("_bn1.", 1280)
    state["_fc.weight"] = rng.normal(size=(1000, 1280)).astype(np.float32)
    state["_fc.bias"] = rng.normal(size=1000).astype(np.float32)
    return state


def test_backbone_ends_in_top_activation(backbone: keras.Model) -> None:
    top = backbone.get_layer(FEATURE_LAYER)
    assert backbone.output is top.output
    assert tuple(top.output.shape) == (None, 2, 2, lite0.FEATURE_CHANNELS)
    # 3,413,024 = the reference state dict less the ImageNet classifier (and num_batches_tracked)
    assert backbone.count_params() == 3_413_024
    assert len(lite0.block_prefixes()) == 16


def test_normalises_like_the_tf_lite_checkpoints(backbone: keras.Model) -> None:
    normalise = backbone.get_layer("normalise")
    out = keras.ops.convert_to_numpy(normalise(np.array([[0.0, 127.0, 255.0]], dtype=np.float32)))
    np.testing.assert_allclose(out, [[-127 / 128, 0.0, 1.0]], atol=1e-6)
    assert (port_lite0.INPUT_MEAN, port_lite0.INPUT_STD) == (lite0.INPUT_MEAN, lite0.INPUT_STD)


def test_build_model_with_lite0_predicts_probabilities() -> None:
    model = build_model(image_size=64, backbone="efficientnet_lite0")
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    probs = model.predict(images, verbose=0)
    assert probs.shape == (2, 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert model.get_layer(FEATURE_LAYER).output.shape[-1] == lite0.FEATURE_CHANNELS


def test_port_maps_every_tensor_and_loads_into_build_model(tmp_path: Path) -> None:
    state = fake_torch_state()
    npz = tmp_path / "state.npz"
    np.savez(npz, **state)
    out = tmp_path / "lite0.weights.h5"
    assert port_lite0.main(["--torch-weights", str(npz), "--out", str(out)]) == 0

    model = build_model(image_size=64, weights=str(out), backbone="efficientnet_lite0")
    stem = model.get_layer("stem_conv").get_weights()[0]
    np.testing.assert_array_equal(stem, state["_conv_stem.weight"].transpose(2, 3, 1, 0))
    dw = model.get_layer("block6d_dwconv").get_weights()[0]
    np.testing.assert_array_equal(dw, state["_blocks.14._depthwise_conv.weight"].transpose(2, 3, 0, 1))
    _, beta, _, var = model.get_layer("top_bn").get_weights()
    np.testing.assert_array_equal(var, state["_bn1.running_var"])
    np.testing.assert_array_equal(beta, state["_bn1.bias"])


def test_port_rejects_an_incomplete_state_dict() -> None:
    state = fake_torch_state()
    del state["_blocks.3._bn1.running_var"]
    with pytest.raises(KeyError):
        port_lite0.keras_weights(state)
    state = fake_torch_state()
    state["_blocks.99._extra.weight"] = np.zeros(1, np.float32)
    with pytest.raises(ValueError, match="backbone tensors"):
        port_lite0.keras_weights(state)
