"""The Grad-CAM overlay: colour map, upsampling and blending."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from service.imaging import overlay


def test_colormap_runs_from_dark_blue_to_dark_red():
    colours = overlay.colormap(np.array([0.0, 0.5, 1.0, -1.0, 2.0, np.nan]))
    assert colours.dtype == np.uint8 and colours.shape == (6, 3)
    assert tuple(colours[0]) == (48, 18, 59) and tuple(colours[2]) == (122, 4, 3)
    assert tuple(colours[3]) == tuple(colours[0]) == tuple(colours[5]) and tuple(colours[4]) == tuple(colours[2])
    ramp = overlay.colormap(np.linspace(0, 1, 50)).astype(int)
    assert np.abs(np.diff(ramp, axis=0)).max() < 40  # smooth: no jumps between neighbouring values


def test_upsample_keeps_the_range_and_the_peak():
    heat = np.zeros((4, 4), np.float32)
    heat[0, 3] = 1.0
    big = overlay.upsample(heat, 32)
    assert big.shape == (32, 32) and big.min() >= 0 and big.max() <= 1
    row, col = np.unravel_index(np.argmax(big), big.shape)
    assert row < 8 and col >= 24


def test_blend_leaves_cold_regions_untouched():
    image = np.full((16, 16, 3), 100, np.uint8)
    heat = np.zeros((2, 2), np.float32)
    heat[1, 1] = 1.0
    mixed = overlay.blend(image, heat)
    assert np.array_equal(mixed[0, 0], image[0, 0])
    assert not np.array_equal(mixed[15, 15], image[15, 15])
    decoded = np.asarray(Image.open(io.BytesIO(overlay.png_bytes(mixed))))
    assert np.array_equal(decoded, mixed)
