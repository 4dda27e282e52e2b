"""Image size limits and the 8-bit conversions shared by every decoder (PIL images and DICOM).

The one definition of the pixel limit lives here: the settings' default (``MRI_MAX_PIXELS``) and the
preprocessing that training uses both take :data:`MAX_PIXELS`, and the decode memory budget is derived from
whichever pixel limit is in force (:func:`decode_budget_bytes`).
"""

from __future__ import annotations

import numpy as np

from service.errors import BadImageError, PayloadTooLargeError

#: 4096 x 4096: above any MRI slice, far below a decompression bomb.
MAX_PIXELS = 4096 * 4096
MIN_SIDE = 8
#: Peak bytes per sample of the float64 steps a sample goes through unless the image is 8-bit colour
#: (modality/VOI LUT output and the temporaries of windowing to 8 bits; measured: 34).
FLOAT_BYTES_PER_SAMPLE = 34
#: What a decode allocates whatever the image's size (the parsed header, the decoder's objects).
DECODE_OVERHEAD_BYTES = 1 << 20


def decoded_bytes(rows: int, columns: int, samples: int, bits_allocated: int, frames: int = 1) -> int:
    """Peak memory of decoding an image, from its header: the pixel data as read and as decoded (at most the
    decoded size each), the float64 steps (all but 8-bit colour images go through them), the 8-bit RGB result."""
    pixels = rows * columns * frames
    values = pixels * samples
    stored = values * max(1, (bits_allocated + 7) // 8)
    floats = values * FLOAT_BYTES_PER_SAMPLE if samples == 1 or bits_allocated > 8 else 0
    return 2 * stored + floats + 3 * pixels + DECODE_OVERHEAD_BYTES


def decode_budget_bytes(max_pixels: int) -> int:
    """The most memory one image's decode may take: what a 16-bit greyscale image of ``max_pixels`` needs, so
    that every ordinary image within the pixel limit fits (413 above; colour and 32-bit samples cost more)."""
    return decoded_bytes(max_pixels, 1, samples=1, bits_allocated=16)


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    """413 over ``max_pixels``; 400 when a side is under ``MIN_SIDE``."""
    if width * height > max_pixels:
        raise PayloadTooLargeError(f"image has {width}x{height} pixels, over the limit of {max_pixels}")
    if min(width, height) < MIN_SIDE:
        raise BadImageError(f"image is {width}x{height}; each side must be at least {MIN_SIDE} pixels")


def window_to_uint8(array: np.ndarray) -> np.ndarray:
    """Linearly map an intensity array's [min, max] to [0, 255] (used for >8-bit data)."""
    values = array.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        raise BadImageError("image has no finite pixel values")
    lo, hi = float(values[finite].min()), float(values[finite].max())
    values = np.where(finite, values, lo)
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.clip(np.rint((values - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def as_rgb(pixels: np.ndarray) -> np.ndarray:
    """Decoded pixels (a (H, W) grey plane or (H, W, 3) RGB) as (H, W, 3) RGB: a plane goes in each channel."""
    return np.stack((pixels, pixels, pixels), axis=-1) if pixels.ndim == 2 else pixels
