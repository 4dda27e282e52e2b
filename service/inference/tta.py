"""Test-time augmentation: one definition, used by the service and by ``mri-classifier evaluate``.

``flip`` averages the outputs (probabilities, ood_score) of each image and its left-right mirror (the only
augmentation that is exact on these slices: brains are near-symmetric left-right, never top-bottom). Both views
go through the runtime as one batch, so a batch of N costs one call of 2N.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal, get_args

import numpy as np

TTA = Literal["none", "flip"]
TTA_MODES: tuple[str, ...] = get_args(TTA)


def outputs_with_tta(
    outputs: Callable[[np.ndarray], Mapping[str, np.ndarray]], images: np.ndarray, mode: str
) -> dict[str, np.ndarray]:
    """``outputs(images)`` [N, S, S, 3] -> named outputs [N, ...], each averaged over the views ``mode`` asks for
    (for ``flip``: one call of 2N)."""
    if mode == "none":
        return dict(outputs(images))
    if mode != "flip":
        raise ValueError(f"unknown test-time augmentation {mode!r}; choose from {', '.join(TTA_MODES)}")
    n = len(images)
    both = outputs(np.concatenate([images, images[:, :, ::-1, :]]))
    return {key: ((value[:n] + value[n:]) / 2.0).astype(np.float32, copy=False) for key, value in both.items()}
