"""The classifier: an EfficientNet backbone, global average pooling, dropout and a 4-way softmax head.

Inputs are float32 pixels in [0, 255]; the backbone normalises inside the model (rescaling to [0, 1] first
is the classic bug). The head keeps its logits in a layer named ``logits`` so that export can build
temperature scaling and Grad-CAM on top of it.
"""

from __future__ import annotations

from pathlib import Path

import keras

from service.labels import NUM_CLASSES

LOGITS_LAYER = "logits"
PROBS_LAYER = "probabilities"
FEATURE_LAYER = "top_activation"  # last convolutional activation of EfficientNet (Grad-CAM target)
EMBEDDING_LAYER = "avg_pool"  # the penultimate embedding (the out-of-distribution score is measured on it)
BACKBONES = ("efficientnet_b0", "efficientnet_lite0", "tiny")


def resolve_weights(weights: str) -> str | None:
    """``imagenet`` | ``none`` | a path to a backbone weights file; returns what Keras expects for ``weights``."""
    if weights == "imagenet":
        return "imagenet"
    if weights in ("none", "", "random"):
        return None
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"--weights: no such weights file {weights!r} (use imagenet, none or a path)")
    return str(path)


def build_backbone(name: str, inputs: keras.KerasTensor, weights: str) -> keras.Model:
    """An ImageNet-style backbone (``include_top=False``) on ``inputs``, optionally with pretrained weights."""
    resolved = resolve_weights(weights)
    if name == "efficientnet_b0":
        keras_weights = "imagenet" if resolved == "imagenet" else None
        backbone = keras.applications.EfficientNetB0(include_top=False, weights=keras_weights, input_tensor=inputs)
    elif name == "efficientnet_lite0":
        from training.lite0 import efficientnet_lite0

        if resolved == "imagenet":
            raise ValueError("efficientnet_lite0 has no Keras download; pass the ported weights file as --weights")
        backbone = efficientnet_lite0(inputs)
    elif name == "tiny":
        backbone = tiny_backbone(inputs)
    else:
        raise ValueError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")
    if resolved not in (None, "imagenet"):
        backbone.load_weights(resolved)
    return backbone


def tiny_backbone(inputs: keras.KerasTensor) -> keras.Model:
    """A few-thousand-parameter CNN with the same interface as EfficientNet (normalises inside, ends in
    ``top_activation``): for tests and smoke runs, never for a model you would ship."""
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="normalise")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="conv1")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", name="top_conv")(x)
    x = keras.layers.Activation("relu", name=FEATURE_LAYER)(x)
    return keras.Model(inputs, x, name="tiny")


def build_model(
    image_size: int = 224,
    weights: str = "none",
    backbone: str = "efficientnet_b0",
    dropout: float = 0.3,
    num_classes: int = NUM_CLASSES,
) -> keras.Model:
    """Build the uncompiled classifier for (image_size, image_size, 3) float inputs in [0, 255]."""
    inputs = keras.Input(shape=(image_size, image_size, 3), name="images", dtype="float32")
    base = build_backbone(backbone, inputs, weights)
    x = keras.layers.GlobalAveragePooling2D(name=EMBEDDING_LAYER)(base.output)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    logits = keras.layers.Dense(num_classes, name=LOGITS_LAYER, dtype="float32")(x)
    probs = keras.layers.Activation("softmax", name=PROBS_LAYER, dtype="float32")(logits)
    return keras.Model(inputs, probs, name=f"{backbone}_mri")


def backbone_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Layers that belong to the backbone (everything before the pooling head)."""
    head = {"images", EMBEDDING_LAYER, "head_dropout", LOGITS_LAYER, PROBS_LAYER}
    return [layer for layer in model.layers if layer.name not in head]
