"""The training augmentations: value range, what each one changes, and mixup's labels."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from training.augment import AugmentConfig, make_augment_fn

OFF = AugmentConfig(flip_left_right=False, rotation=0, zoom=0, translate=0, contrast=0, brightness=0)


def _batch(n: int = 8, size: int = 32) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Dark background with a bright disc ("head") of varying intensity; one-hot labels; weights 1..n."""
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2
    images = np.zeros((n, size, size, 3), np.uint8)
    for i in range(n):
        images[i][disc] = 60 + 20 * i
    labels = np.eye(4, dtype=np.float32)[np.arange(n) % 4]
    weights = np.arange(1, n + 1, dtype=np.float32)
    return tf.constant(images), tf.constant(labels), tf.constant(weights)


def _run(config: AugmentConfig, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y, w = make_augment_fn(config, seed)(*_batch())
    return x.numpy(), y.numpy(), w.numpy()


def test_everything_off_is_the_identity() -> None:
    x, y, w = _run(OFF)
    images, labels, weights = _batch()
    np.testing.assert_allclose(x, images.numpy().astype(np.float32))
    np.testing.assert_array_equal(y, labels.numpy())
    np.testing.assert_array_equal(w, weights.numpy())


def test_all_augmentations_keep_pixel_range_and_shape() -> None:
    config = AugmentConfig(
        gamma=0.3, blur_probability=1, noise_std=10, downscale_probability=1, invert_probability=0.5, mixup_alpha=0.4
    )
    x, y, w = _run(config)
    assert x.shape == (8, 32, 32, 3)
    assert x.min() >= 0 and x.max() <= 255
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-5)
    assert np.all(w >= 1) and np.all(w <= 8)


def test_invert_changes_tissue_but_keeps_background_dark() -> None:
    x, _, _ = _run(AugmentConfig(**{**OFF.to_dict(), "invert_probability": 1.0}))
    images = _batch()[0].numpy().astype(np.float32)
    background = images == 0
    assert np.all(x[background] == 0)
    # the dimmest head becomes the brightest and vice versa
    centre = x[:, 16, 16, 0]
    assert centre[0] > centre[-1]
    np.testing.assert_allclose(x[~background], 275.0 - images[~background])


def test_remap_passes_tissue_through_one_random_curve_per_image_and_keeps_background_dark() -> None:
    """Every tissue pixel of one value gets one new value (a curve, per image), the background stays 0, curves
    differ between images, and some cross (a brighter tissue becomes the darker one: another sequence)."""
    ramp = np.zeros((16, 8, 256, 3), np.uint8)
    ramp[:, :, 21:, :] = np.arange(21, 256, dtype=np.uint8)[None, None, :, None]
    labels, weights = tf.one_hot(tf.zeros(16, tf.int32), 4), tf.ones(16)
    config = AugmentConfig(**{**OFF.to_dict(), "remap_probability": 1.0})
    x = make_augment_fn(config, 3)(tf.constant(ramp), labels, weights)[0].numpy()
    assert np.all(x[:, :, :21] == 0) and x.min() >= 0 and x.max() <= 255
    np.testing.assert_allclose(x, np.broadcast_to(x[:, :1, :, :1], x.shape), atol=1e-4)  # a function of the value
    curves = x[:, 0, 21:, 0]
    assert not np.allclose(curves, ramp[:, 0, 21:, 0]), "nothing changed"
    assert len({tuple(np.round(c, 1)) for c in curves}) == 16, "one curve for all images"
    assert any(np.any(np.diff(c) < -1) for c in curves), "no curve ever reverses a contrast"
    kept = make_augment_fn(AugmentConfig(**{**OFF.to_dict(), "remap_probability": 0.0}), 3)
    np.testing.assert_array_equal(kept(tf.constant(ramp), labels, weights)[0].numpy(), ramp.astype(np.float32))


def test_downscale_blurs_edges_but_keeps_mean_intensity() -> None:
    x, _, _ = _run(AugmentConfig(**{**OFF.to_dict(), "downscale_probability": 1.0}))
    images = _batch()[0].numpy().astype(np.float32)
    assert not np.allclose(x, images)
    np.testing.assert_allclose(x.mean(axis=(1, 2, 3)), images.mean(axis=(1, 2, 3)), rtol=0.1)


def test_mixup_blends_images_labels_and_weights_consistently() -> None:
    x, y, w = _run(AugmentConfig(**{**OFF.to_dict(), "mixup_alpha": 1.0}), seed=3)
    images, labels, weights = (t.numpy().astype(np.float32) for t in _batch())
    mixed = ~np.isclose(y.max(axis=1), 1.0)
    assert mixed.any(), "Beta(1, 1) should mix at least one pair of a batch of 8"
    for i in np.flatnonzero(mixed):
        # lam is the share of the image's own label; its partner is the other class with a non-zero share
        own = int(labels[i].argmax())
        lam = y[i, own]
        partners = [j for j in range(8) if j != i and np.isclose(y[i, int(labels[j].argmax())], 1 - lam, atol=1e-5)]
        assert any(
            np.allclose(x[i], lam * images[i] + (1 - lam) * images[j], atol=1e-3)
            and np.isclose(w[i], lam * weights[i] + (1 - lam) * weights[j], atol=1e-4)
            for j in partners
        )


@pytest.mark.parametrize(
    "field, value", [("invert_probability", 1.5), ("downscale_probability", -0.1), ("mixup_alpha", -1.0)]
)
def test_out_of_range_strengths_are_refused(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        AugmentConfig(**{field: value})
