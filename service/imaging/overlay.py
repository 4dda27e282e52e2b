"""Grad-CAM heatmaps made visible: upsampling, a small colour map in numpy, alpha blending, PNG encoding.

No plotting library: the colour map is a piecewise-linear version of Google's Turbo (a rainbow map designed to
be smooth and readable), sampled at nine points.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

#: Turbo sampled at 0, 1/8, ..., 1 (RGB, 0-255): dark blue -> cyan -> green -> yellow -> dark red.
_TURBO_ANCHORS = np.array(
    [
        [48, 18, 59],
        [70, 107, 227],
        [40, 187, 236],
        [50, 242, 152],
        [164, 252, 60],
        [237, 208, 58],
        [251, 128, 34],
        [206, 41, 4],
        [122, 4, 3],
    ],
    dtype=np.float32,
)

DEFAULT_ALPHA = 0.6


def colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) -> uint8 RGB of shape ``values.shape + (3,)``."""
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float32)), 0.0, 1.0)
    positions = np.linspace(0.0, 1.0, len(_TURBO_ANCHORS), dtype=np.float32)
    channels = [np.interp(v, positions, _TURBO_ANCHORS[:, c]) for c in range(3)]
    return np.rint(np.stack(channels, axis=-1)).astype(np.uint8)


def upsample(heatmap: np.ndarray, size: int) -> np.ndarray:
    """A heatmap [h, w] in [0, 1] -> float32 [size, size], bilinear, still in [0, 1]."""
    small = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0.0, 1.0)
    if small.shape == (size, size):
        return small
    image = Image.fromarray(small).resize((size, size), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)


def blend(image: np.ndarray, heatmap: np.ndarray, alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """Alpha-blend the colour-mapped heatmap on the model input (uint8 [S, S, 3]); the blend weight of each
    pixel is ``alpha * heat``, so regions the class does not depend on keep the original image."""
    size = image.shape[0]
    heat = upsample(heatmap, size)
    weight = (alpha * heat)[:, :, None]
    mixed = (1.0 - weight) * image.astype(np.float32) + weight * colormap(heat).astype(np.float32)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode a uint8 RGB array as PNG."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()
