"""The linear probe: C chosen on validation, and the model it becomes computes the same logits."""

from __future__ import annotations

import numpy as np

from training.ood_score import embed
from training.probe import fit_probe, probe_model


def test_the_probe_chooses_c_on_validation_and_becomes_the_model_head() -> None:
    import keras

    from training.model import LOGITS_LAYER

    rng = np.random.default_rng(0)
    labels = np.arange(64) % 4
    images = rng.uniform(0, 255, (64, 32, 32, 3)).astype(np.float32)
    images[:, :8, :8, :] = (labels * 60)[:, None, None, None]  # a class-specific patch the features can see
    keras.utils.set_random_seed(1)
    base = probe_model(32, "none", "tiny", 0.0, np.zeros((16, 4)), np.zeros(4))
    features = embed(base, images, 16)
    result = fit_probe(features[:48], labels[:48], features[48:], labels[48:], [1e-4, 1.0, 100.0])
    assert [s["c"] for s in result.sweep] == [1e-4, 1.0, 100.0]
    best = max(s["val_accuracy"] for s in result.sweep)
    assert result.c == next(s["c"] for s in result.sweep if s["val_accuracy"] == best), "the first best C"
    model = probe_model(32, "none", "tiny", 0.0, result.coef, result.intercept)
    model.set_weights([*base.get_weights()[:-2], result.coef, result.intercept])  # the same frozen backbone
    logits = keras.Model(model.input, model.get_layer(LOGITS_LAYER).output)(images[48:], training=False)
    expected = features[48:] @ result.coef + result.intercept
    np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-4, atol=1e-4)
    assert result.summary()["c"] == result.c
