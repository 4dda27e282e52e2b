"""Test-time augmentation: one definition, used by the service and by ``mri-classifier evaluate``.

``flip`` averages the probabilities of each image and its left-right mirror (the only augmentation that is
exact on these slices: brains are near-symmetric left-right, never top-bottom). Both views go through the
runtime as one batch, so a batch of N costs one call of 2N.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal, get_args

import numpy as np

TTA = Literal["none", "flip"]
TTA_MODES: tuple[str, ...] = get_args(TTA)


def predict_with_tta(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray, mode: str) -> np.ndarray:
    """``predict(images)`` [N, S, S, 3] -> [N, C], averaged over the views ``mode`` asks for."""
    if mode == "none":
        return predict(images)
    if mode != "flip":
        raise ValueError(f"unknown test-time augmentation {mode!r}; choose from {', '.join(TTA_MODES)}")
    n = len(images)
    both = predict(np.concatenate([images, images[:, :, ::-1, :]]))
    probs = (both[:n] + both[n:]) / 2.0
    return probs.astype(np.float32, copy=False)


def outputs_with_tta(
    outputs: Callable[[np.ndarray], Mapping[str, np.ndarray]], images: np.ndarray, mode: str
) -> dict[str, np.ndarray]:
    """Like :func:`predict_with_tta` for a model with named outputs: each output averaged over the views."""
    if mode == "none":
        return dict(outputs(images))
    if mode != "flip":
        raise ValueError(f"unknown test-time augmentation {mode!r}; choose from {', '.join(TTA_MODES)}")
    n = len(images)
    both = outputs(np.concatenate([images, images[:, :, ::-1, :]]))
    return {key: ((value[:n] + value[n:]) / 2.0).astype(np.float32, copy=False) for key, value in both.items()}
