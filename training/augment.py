"""Training-only augmentation, applied in the tf.data pipeline (never part of the exported model).

Left-right flips, small rotations, zoom and translation, contrast, brightness and gamma changes, blur, noise,
lower resolution, inversion of the tissue intensities and a random remapping of them (dark background kept):
changes that imitate other scanners, sequences and crops. Mixup blends pairs of images and their labels. No
up-down flip unless asked for (brains have a top).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import keras
import tensorflow as tf


@dataclass(frozen=True)
class AugmentConfig:
    """Strengths of each augmentation; 0 turns one off."""

    flip_left_right: bool = True
    flip_up_down: bool = False
    rotation: float = 0.04  # fraction of a full turn (0.04 ~ 14 degrees)
    zoom: float = 0.10
    translate: float = 0.05
    contrast: float = 0.15
    brightness: float = 0.10
    gamma: float = 0.0  # max |log gamma|; 0.25 ~ gamma in [0.78, 1.28]
    blur_probability: float = 0.0
    noise_std: float = 0.0  # in pixel units (0-255)
    downscale_probability: float = 0.0  # shrink to 35-100% and back up: other resolutions and re-encodings
    invert_probability: float = 0.0  # tissue intensities inverted, background kept dark (T1 <-> T2-like contrast)
    remap_probability: float = 0.0  # tissue intensities through a random piecewise-linear curve: other sequences
    mixup_alpha: float = 0.0  # Beta(alpha, alpha) mixing of image pairs and their labels

    def __post_init__(self) -> None:
        for name in self.strengths():
            value = getattr(self, name)
            if name.endswith("_probability") and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
            if value < 0:
                raise ValueError(f"{name} must not be negative")

    @classmethod
    def strengths(cls) -> list[str]:
        """Names of the numeric fields (every one but the flip switches)."""
        return [f.name for f in fields(cls) if isinstance(f.default, float)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_augmenter(config: AugmentConfig, seed: int) -> keras.Sequential:
    """Keras random layers for the geometric and contrast part (inputs and outputs in [0, 255])."""
    layers: list[keras.layers.Layer] = []
    mode = {(True, False): "horizontal", (False, True): "vertical", (True, True): "horizontal_and_vertical"}
    flip = mode.get((config.flip_left_right, config.flip_up_down))
    if flip:
        layers.append(keras.layers.RandomFlip(flip, seed=seed))
    if config.rotation > 0:
        layers.append(keras.layers.RandomRotation(config.rotation, fill_mode="constant", seed=seed + 1))
    if config.zoom > 0:
        layers.append(keras.layers.RandomZoom(config.zoom, fill_mode="constant", seed=seed + 2))
    if config.translate > 0:
        layers.append(
            keras.layers.RandomTranslation(config.translate, config.translate, fill_mode="constant", seed=seed + 3)
        )
    if config.contrast > 0:
        layers.append(keras.layers.RandomContrast(config.contrast, value_range=(0, 255), seed=seed + 4))
    if config.brightness > 0:
        layers.append(keras.layers.RandomBrightness(config.brightness, value_range=(0, 255), seed=seed + 5))
    return keras.Sequential(layers, name="augment")


def make_augment_fn(config: AugmentConfig, seed: int):  # type: ignore[no-untyped-def]
    """A tf.data map function ``(images, labels, weights) -> (augmented images, labels, weights)`` on batches."""
    augmenter = build_augmenter(config, seed)
    rng = tf.random.Generator.from_seed(seed)

    def augment(images: tf.Tensor, labels: tf.Tensor, weights: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        x = tf.cast(images, tf.float32)
        if augmenter.layers:
            x = augmenter(x, training=True)
        batch = tf.shape(x)[0]
        if config.gamma > 0:
            log_gamma = rng.uniform([batch, 1, 1, 1], -config.gamma, config.gamma)
            x = 255.0 * tf.pow(tf.clip_by_value(x / 255.0, 0.0, 1.0), tf.exp(log_gamma))
        if config.blur_probability > 0:
            kernel = tf.constant([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
            kernel = tf.tensordot(kernel, kernel, axes=0)[:, :, None, None] * tf.ones([1, 1, 3, 1])
            blurred = tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "SAME")
            x = tf.where(_per_image(rng, x, config.blur_probability), blurred, x)
        if config.downscale_probability > 0:
            x = _downscale(x, rng, config.downscale_probability)
        if config.invert_probability > 0:
            x = _invert_tissue(x, rng, config.invert_probability)
        if config.remap_probability > 0:
            x = _remap_tissue(x, rng, config.remap_probability)
        if config.noise_std > 0:
            x = x + rng.normal(tf.shape(x), stddev=config.noise_std)
        x = tf.clip_by_value(x, 0.0, 255.0)
        if config.mixup_alpha > 0:
            x, labels, weights = _mixup(x, labels, weights, rng, config.mixup_alpha)
        return x, labels, weights

    return augment


def _per_image(rng: tf.random.Generator, x: tf.Tensor, probability: float) -> tf.Tensor:
    """A [batch, 1, 1, 1] boolean: which images of the batch get an augmentation."""
    return rng.uniform([tf.shape(x)[0], 1, 1, 1]) < probability


def _downscale(x: tf.Tensor, rng: tf.random.Generator, probability: float) -> tf.Tensor:
    """Shrink chosen images to a random 35-100% of their size and back (one scale per batch)."""
    size = tf.shape(x)[1:3]
    scale = rng.uniform([], 0.35, 1.0)
    small = tf.maximum(tf.cast(tf.cast(size, tf.float32) * scale, tf.int32), 8)
    low = tf.image.resize(tf.image.resize(x, small, method="area"), size, method="bilinear")
    return tf.where(_per_image(rng, x, probability), low, x)


def _invert_tissue(x: tf.Tensor, rng: tf.random.Generator, probability: float) -> tf.Tensor:
    """Invert the intensities inside the head (pixels above a low threshold); the background stays dark."""
    tissue = tf.reduce_mean(x, axis=-1, keepdims=True) > 20.0
    inverted = tf.where(tissue, 275.0 - x, x)
    return tf.where(_per_image(rng, x, probability), inverted, x)


#: The remapping curve: knots at 0, 1/K, ..., 1 of the range, each but the first moved by up to +-REMAP_SHIFT.
REMAP_KNOTS = 5
REMAP_SHIFT = 0.35


def _remap_tissue(x: tf.Tensor, rng: tf.random.Generator, probability: float) -> tf.Tensor:
    """Map the intensities inside the head through a random piecewise-linear curve per image (MONAI's
    ``RandHistogramShift``, with knots free to cross: tissues may swap brightness as between T1, T2 and FLAIR);
    the background stays dark."""
    batch, k = tf.shape(x)[0], REMAP_KNOTS
    shift = rng.uniform([batch, k], -REMAP_SHIFT, REMAP_SHIFT)
    knots = tf.clip_by_value(tf.linspace(1.0 / k, 1.0, k)[None] + shift, 0.0, 1.0) * 255.0
    knots = tf.concat([tf.zeros([batch, 1]), knots], axis=1)  # [batch, K + 1]; 0 stays 0
    position = tf.clip_by_value(x / 255.0, 0.0, 1.0) * float(REMAP_KNOTS)
    index = tf.minimum(tf.cast(tf.floor(position), tf.int32), k - 1)
    fraction = position - tf.cast(index, tf.float32)
    flat = tf.reshape(index, [batch, -1])
    low = tf.reshape(tf.gather(knots, flat, batch_dims=1), tf.shape(x))
    high = tf.reshape(tf.gather(knots, flat + 1, batch_dims=1), tf.shape(x))
    tissue = tf.reduce_mean(x, axis=-1, keepdims=True) > 20.0
    remapped = tf.where(tissue, low + fraction * (high - low), x)
    return tf.where(_per_image(rng, x, probability), remapped, x)


def _mixup(
    x: tf.Tensor, labels: tf.Tensor, weights: tf.Tensor, rng: tf.random.Generator, alpha: float
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Blend each image with a shuffled partner: lam ~ Beta(alpha, alpha), labels and weights alike."""
    batch = tf.shape(x)[0]
    g1 = tf.random.stateless_gamma([batch], rng.make_seeds(1)[:, 0], alpha=alpha)
    g2 = tf.random.stateless_gamma([batch], rng.make_seeds(1)[:, 0], alpha=alpha)
    lam = g1 / (g1 + g2 + 1e-12)
    order = tf.argsort(rng.uniform([batch]))
    lam_x = lam[:, None, None, None]
    lam_y = lam[:, None]
    mixed_x = lam_x * x + (1 - lam_x) * tf.gather(x, order)
    mixed_y = lam_y * labels + (1 - lam_y) * tf.gather(labels, order)
    mixed_w = lam * weights + (1 - lam) * tf.gather(weights, order)
    return mixed_x, mixed_y, mixed_w
