"""EfficientNet-Lite0 (``include_top=False``) as a Keras 3 functional model.

A layer-for-layer port of the reference PyTorch model that ships with the pretrained weights
(``efficientnet_lite_pytorch``, itself converted from the TensorFlow TPU ``efficientnet/lite`` checkpoints):
ReLU6 everywhere, no squeeze-and-excitation, stem and head not scaled, BatchNorm ``eps=1e-3`` and
momentum 0.99 (PyTorch's 0.01). Layer names follow ``keras.applications.EfficientNetB0`` (``stem_conv``,
``block2a_expand_conv``, ..., ``top_activation``) so Grad-CAM and the classifier head attach the same way.

Input: float32 RGB pixels in [0, 255]. The Lite checkpoints were trained with the "inception-style"
normalisation ``(x - 127) / 128`` (TF ``efficientnet_lite_builder.MEAN_RGB/STDDEV_RGB``), not the ImageNet
mean/std of the B0 models; the ``normalise`` layer does that inside the model.

Padding: the reference convolutions use TensorFlow-style "same" padding (``Conv2dStaticSamePadding``: total
``max((ceil(i/s) - 1)*s + k - i, 0)``, the smaller half before, the larger half after), which is exactly
Keras ``padding="same"`` on every backend, for any input size. No convolution in the reference pads
symmetrically, so no explicit ``ZeroPadding2D`` is needed.
"""

from __future__ import annotations

import string
from typing import NamedTuple

import keras

FEATURE_LAYER = "top_activation"
FEATURE_CHANNELS = 1280
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99  # Keras convention; PyTorch momentum 0.01
INPUT_MEAN = 127.0
INPUT_STD = 128.0
STEM_FILTERS = 32


class Stage(NamedTuple):
    """One stage of MBConv blocks (``r{repeats}_k{kernel}_s{stride}_e{expand}_i{in}_o{out}``)."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int


# efficientnet_lite_builder.py / efficientnet_lite_pytorch.utils.efficientnet_lite; Lite0 scales nothing.
STAGES: tuple[Stage, ...] = (
    Stage(1, 3, 1, 1, 32, 16),
    Stage(2, 3, 2, 6, 16, 24),
    Stage(2, 5, 2, 6, 24, 40),
    Stage(3, 3, 2, 6, 40, 80),
    Stage(3, 5, 1, 6, 80, 112),
    Stage(4, 5, 2, 6, 112, 192),
    Stage(1, 3, 1, 6, 192, 320),
)


def block_prefixes() -> list[str]:
    """Keras name prefix of each MBConv block, in order: index ``i`` is PyTorch's ``_blocks.{i}``."""
    return [
        f"block{stage}{string.ascii_lowercase[r]}_"
        for stage, spec in enumerate(STAGES, start=1)
        for r in range(spec.repeats)
    ]


def _bn(name: str) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(axis=-1, epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)


def _relu6(name: str) -> keras.layers.ReLU:
    return keras.layers.ReLU(max_value=6.0, name=name)


def _mbconv(
    x: keras.KerasTensor,
    prefix: str,
    filters_in: int,
    filters_out: int,
    kernel: int,
    stride: int,
    expand: int,
    drop_rate: float,
) -> keras.KerasTensor:
    """Mobile inverted bottleneck without SE: [1x1 expand] -> depthwise kxk -> 1x1 project [+ skip]."""
    inputs = x
    filters = filters_in * expand
    if expand != 1:
        x = keras.layers.Conv2D(filters, 1, padding="same", use_bias=False, name=prefix + "expand_conv")(x)
        x = _bn(prefix + "expand_bn")(x)
        x = _relu6(prefix + "expand_activation")(x)
    x = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=prefix + "dwconv")(x)
    x = _bn(prefix + "bn")(x)
    x = _relu6(prefix + "activation")(x)
    x = keras.layers.Conv2D(filters_out, 1, padding="same", use_bias=False, name=prefix + "project_conv")(x)
    x = _bn(prefix + "project_bn")(x)
    if stride == 1 and filters_in == filters_out:
        if drop_rate > 0:
            # Stochastic depth (PyTorch ``drop_connect``): drops whole samples' residual branch in training.
            x = keras.layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=prefix + "drop")(x)
        x = keras.layers.Add(name=prefix + "add")([x, inputs])
    return x


def efficientnet_lite0(inputs: keras.KerasTensor, drop_connect_rate: float = 0.2) -> keras.Model:
    """EfficientNet-Lite0 feature extractor on ``inputs`` ([N, H, W, 3] float pixels in [0, 255]).

    The output is the ReLU6 of the final 1x1 conv + BN, 1280 channels at 1/32 resolution, in the layer
    named ``top_activation``. ``drop_connect_rate`` is the reference stochastic-depth rate, scaled
    linearly by block index (training only).
    """
    x = keras.layers.Rescaling(1.0 / INPUT_STD, offset=-INPUT_MEAN / INPUT_STD, name="normalise")(inputs)
    x = keras.layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = _bn("stem_bn")(x)
    x = _relu6("stem_activation")(x)

    prefixes = block_prefixes()
    index = 0
    for spec in STAGES:
        for r in range(spec.repeats):
            x = _mbconv(
                x,
                prefixes[index],
                filters_in=spec.filters_in if r == 0 else spec.filters_out,
                filters_out=spec.filters_out,
                kernel=spec.kernel,
                stride=spec.stride if r == 0 else 1,
                expand=spec.expand,
                drop_rate=drop_connect_rate * index / len(prefixes),
            )
            index += 1

    x = keras.layers.Conv2D(FEATURE_CHANNELS, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = _bn("top_bn")(x)
    x = _relu6(FEATURE_LAYER)(x)
    return keras.Model(inputs, x, name="efficientnet_lite0")
