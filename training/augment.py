"""Training-only augmentation, applied in the tf.data pipeline (never part of the exported model).

Left-right flips, small rotations, zoom and translation, contrast, brightness and gamma changes, blur and noise:
changes that imitate other scanners, sequences and crops. No up-down flip unless asked for (brains have a top).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
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
            use = rng.uniform([batch, 1, 1, 1]) < config.blur_probability
            x = tf.where(use, blurred, x)
        if config.noise_std > 0:
            x = x + rng.normal(tf.shape(x), stddev=config.noise_std)
        return tf.clip_by_value(x, 0.0, 255.0), labels, weights

    return augment
