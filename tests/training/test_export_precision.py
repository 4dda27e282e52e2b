"""Issue 14 item 3: under the mixed_float16 policy the export still serves float32 probabilities, equal to the
float32 softmax of the logits at the fitted temperature (what validation reports)."""

from __future__ import annotations

import numpy as np

from training.export import export_model
from training.metrics import softmax
from training.model import FEATURE_LAYER, LOGITS_LAYER, build_model

TEMPERATURE = 1.7


def test_mixed_precision_export_serves_float32_probabilities(tmp_path):
    import keras
    import tensorflow as tf

    x = np.random.default_rng(3).uniform(0, 255, (6, 32, 32, 3)).astype(np.float32)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model(32, backbone="tiny")
        assert model.get_layer(FEATURE_LAYER).compute_dtype == "float16"  # the policy really is in force
        logits = keras.Model(model.input, model.get_layer(LOGITS_LAYER).output)(x, training=False).numpy()
        version_dir = export_model(model, tmp_path, {"classes": []}, temperature=TEMPERATURE)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert logits.dtype == np.float32
    # the numbers validation reports: float64 softmax of the float32 logits
    expected = softmax(logits.astype(np.float64), TEMPERATURE)
    loaded = tf.saved_model.load(str(version_dir))
    served = loaded.signatures["serving_default"](images=tf.constant(x))["probabilities"]
    assert served.dtype == tf.float32
    np.testing.assert_allclose(served.numpy(), expected, rtol=0, atol=2e-6)
    cam = loaded.signatures["gradcam"](images=tf.constant(x), class_index=tf.constant([-1] * len(x), tf.int32))
    assert cam["probabilities"].dtype == tf.float32 and cam["heatmap"].dtype == tf.float32
    np.testing.assert_allclose(cam["probabilities"].numpy(), expected, rtol=0, atol=2e-6)
    assert np.all(np.isfinite(cam["heatmap"].numpy()))
