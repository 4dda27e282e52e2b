"""Decoding and resizing shared by training and serving: formats, conversions, limits, DICOM."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service.errors import BadImageError, PayloadTooLargeError, UnsupportedMediaTypeError
from service.imaging.preprocessing import (
    PreprocessConfig,
    _mean_percentile,
    brain_bounding_box,
    decode_image,
    decode_pixels,
    model_pixels,
    preprocess,
    sniff_format,
    to_model_input,
)
from tests.synthetic import mri_like


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return mri_like(0, np.random.default_rng(3), 64)


def test_png_roundtrip_is_lossless_and_shaped(rgb):
    out = preprocess(encode(Image.fromarray(rgb), "PNG"), PreprocessConfig(image_size=64))
    assert out.dtype == np.uint8 and out.shape == (64, 64, 3)
    np.testing.assert_array_equal(out, rgb)


def test_grayscale_and_rgb_versions_give_the_same_input(rgb):
    gray = Image.fromarray(rgb[:, :, 0], mode="L")
    a = preprocess(encode(gray, "PNG"), PreprocessConfig(32))
    b = preprocess(encode(Image.fromarray(rgb), "PNG"), PreprocessConfig(32))
    np.testing.assert_array_equal(a, b)


def test_16_bit_grayscale_is_windowed_to_8_bit(rgb):
    sixteen = rgb[:, :, 0].astype(np.uint16) * 16  # 12-bit range
    out = decode_image(encode(Image.fromarray(sixteen), "PNG"))
    assert out.dtype == np.uint8 and out.max() == 255 and out.min() == 0
    assert np.corrcoef(out[:, :, 0].ravel(), rgb[:, :, 0].ravel())[0, 1] > 0.999


def test_transparency_is_composited_on_black():
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[:8, :, 3] = 255  # top half opaque, bottom half transparent
    out = decode_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert out[:8].min() == 200 and out[8:].max() == 0
    palette = Image.fromarray(rgba, "RGBA").convert("P")
    assert decode_image(encode(palette, "PNG")).shape == (16, 16, 3)


def test_cmyk_jpeg_is_converted(rgb):
    out = decode_image(encode(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95))
    assert out.shape == (64, 64, 3) and np.abs(out.astype(int) - rgb).mean() < 12


def test_exif_orientation_is_applied():
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, :10] = 255  # bright left edge, landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    out = decode_image(encode(Image.fromarray(img), "JPEG", exif=exif.tobytes(), quality=95))
    assert out.shape == (40, 20, 3)


def test_non_square_images_are_padded_not_stretched():
    wide = np.full((50, 100, 3), 255, np.uint8)
    out = to_model_input(wide, PreprocessConfig(image_size=20))
    assert out.shape == (20, 20, 3)
    assert out[:4].max() == 0 and out[-4:].max() == 0 and out[10, 10].min() == 255


def test_brain_crop_finds_the_foreground():
    img = np.zeros((100, 100, 3), np.uint8)
    img[30:70, 20:60] = 150
    top, bottom, left, right = brain_bounding_box(img, margin=0.0)
    assert (top, bottom, left, right) == (30, 70, 20, 60)
    out = to_model_input(img, PreprocessConfig(image_size=40, crop_brain=True, crop_margin=0.0))
    assert out.min() == 150  # only brain left


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_every_exif_orientation_matches_pillows_exif_transpose(orientation, fmt):
    """The shortcut that skips ``exif_transpose`` without an Orientation tag must not change any image."""
    from PIL import ImageOps

    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 50, 3), np.uint8)), fmt, exif=exif.tobytes()
    )
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    np.testing.assert_array_equal(decode_image(data), expected)


def _reference_box(rgb: np.ndarray, margin: float = 0.05) -> tuple[int, int, int, int]:
    """The crop as the shipped model was trained with it: NumPy's channel mean and percentile."""
    gray = rgb.mean(axis=2)
    peak = float(np.percentile(gray, 99.5))
    if peak <= 0:
        return 0, rgb.shape[0], 0, rgb.shape[1]
    mask = gray > max(10.0, 0.1 * peak)
    rows = np.flatnonzero(mask.sum(axis=1) > 0.02 * rgb.shape[1])
    cols = np.flatnonzero(mask.sum(axis=0) > 0.02 * rgb.shape[0])
    if rows.size == 0 or cols.size == 0:
        return 0, rgb.shape[0], 0, rgb.shape[1]
    pad_r, pad_c = int(margin * rgb.shape[0]), int(margin * rgb.shape[1])
    top, bottom = max(0, rows[0] - pad_r), min(rgb.shape[0], rows[-1] + 1 + pad_r)
    left, right = max(0, cols[0] - pad_c), min(rgb.shape[1], cols[-1] + 1 + pad_c)
    if (bottom - top) < 8 or (right - left) < 8:
        return 0, rgb.shape[0], 0, rgb.shape[1]
    return int(top), int(bottom), int(left), int(right)


def test_the_fast_crop_is_numpys_bit_for_bit():
    """The crop's histogram percentile and integer grey level must equal what the shipped model was trained
    with (``np.percentile(rgb.mean(axis=2), 99.5)``), on random, flat and MRI-like images."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((1, 1), (7, 300), (257, 129))]
    images += [np.full((5, 5, 3), 255, np.uint8), np.zeros((9, 9, 3), np.uint8)]
    images += [mri_like(c, np.random.default_rng(c), 64) for c in range(4)]
    sparse = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8) * (rng.random((40, 50, 1)) < 0.01)
    images.append(sparse.astype(np.uint8))
    for image in images:
        total = image.astype(np.uint16).sum(axis=2)
        for q in (0.0, 12.3, 50.0, 99.5, 100.0):
            assert _mean_percentile(total, 3, q) == float(np.percentile(image.mean(axis=2), q))
        assert brain_bounding_box(image) == _reference_box(image)
        grey = image[:, :, 1]  # a grey plane gives the box of the RGB image with that plane in each channel
        assert brain_bounding_box(grey) == _reference_box(np.stack([grey] * 3, axis=-1))


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", BadImageError),
        (b"GIF89a" + b"\0" * 20, UnsupportedMediaTypeError),
        (b"BM" + b"\0" * 40, UnsupportedMediaTypeError),
        (b"%PDF-1.4", UnsupportedMediaTypeError),
        (b"RIFF\0\0\0\0WEBPVP8 ", UnsupportedMediaTypeError),
        (b"<html></html>", UnsupportedMediaTypeError),
        (b"\xff\xd8\xff\xe0 broken", BadImageError),
        (b"\x89PNG\r\n\x1a\n broken", BadImageError),
    ],
)
def test_bad_bytes_raise_reasoned_errors(data, error):
    with pytest.raises(error) as info:
        preprocess(data, PreprocessConfig(32))
    assert info.value.reason and len(info.value.reason) < 120


def test_truncated_jpeg_is_rejected(rgb):
    data = encode(Image.fromarray(rgb), "JPEG")
    with pytest.raises(BadImageError):
        decode_image(data[: len(data) // 2])


def test_pixel_limit_refuses_before_decoding():
    bomb = encode(Image.new("L", (5000, 5000)), "PNG")
    assert len(bomb) < 100_000
    with pytest.raises(PayloadTooLargeError):
        decode_image(bomb, max_pixels=1_000_000)


def test_tiny_images_are_refused():
    with pytest.raises(BadImageError, match="at least"):
        decode_image(encode(Image.new("RGB", (1, 1)), "PNG"))


def test_format_is_sniffed_from_bytes_not_names(rgb):
    assert sniff_format(encode(Image.fromarray(rgb), "PNG")) == "PNG"
    assert sniff_format(encode(Image.fromarray(rgb), "JPEG")) == "JPEG"


def test_one_pixel_limit_for_training_and_the_service():
    """Regression: the preprocessing (and so training) refused images over 40 MP, the service over 16.7 MP."""
    import inspect

    from service.config import Settings
    from service.imaging.pixels import MAX_PIXELS

    served = Settings.model_fields["max_pixels"].default
    for function in (preprocess, decode_image):
        assert inspect.signature(function).parameters["max_pixels"].default == served == MAX_PIXELS


def _service_imports(module: str) -> set[str]:
    """The ``service`` modules (dotted, below ``service``) that ``module`` imports, at the top or inside functions."""
    import ast
    from pathlib import Path

    import service

    root = Path(service.__file__).parent

    def path(name: str) -> Path:
        return root / (name.replace(".", "/") + ".py")

    tree = ast.parse(path(module).read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    modules = {name.removeprefix("service.") for name in names if name.startswith("service.")}
    return {name for name in modules if path(name).is_file()}


def test_dicom_decoding_does_not_import_the_preprocessing():
    """Regression: ``imaging.dicom`` and ``imaging.preprocessing`` imported each other (inside functions)."""
    assert "imaging.dicom" in _service_imports("imaging.preprocessing")
    seen, todo = set(), ["imaging.dicom"]
    while todo:  # everything service.imaging.dicom reaches, directly or not
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += _service_imports(module)
    assert "imaging.preprocessing" not in seen, seen


@pytest.mark.parametrize(
    ("side", "decoded"),
    [(100, 100), (127, 127), (128, 64), (255, 128), (256, 64), (520, 65), (1024, 128)],
)
def test_large_jpegs_are_decoded_at_reduced_scale_never_below_twice_the_input(side, decoded):
    """With a 32 px input, a JPEG is decoded at 1/2, 1/4 or 1/8 scale only while both sides stay >= 64 px (the
    largest reduction that keeps them so); smaller JPEGs and every PNG are decoded at their own size."""
    rgb = mri_like(1, np.random.default_rng(5), side)
    jpeg, png = encode(Image.fromarray(rgb), "JPEG", quality=95), encode(Image.fromarray(rgb), "PNG")
    config = PreprocessConfig(image_size=32, crop_brain=True)
    pixels = model_pixels(jpeg, config)
    scale = max(s for s in (1, 2, 4, 8) if side >= 64 * s)
    assert pixels.shape[:2] == (decoded, decoded) and decoded == -(-side // scale)
    assert model_pixels(png, config).shape[:2] == (side, side)
    assert np.array_equal(preprocess(jpeg, config), to_model_input(pixels, config))
    if decoded == side:  # the exact path: what a full decode gives, bit for bit
        assert np.array_equal(preprocess(jpeg, config), to_model_input(decode_pixels(jpeg), config))
    else:  # the same picture, resampled another way: close, not equal
        full = to_model_input(decode_pixels(jpeg), config).astype(np.float64).ravel()
        reduced = preprocess(jpeg, config).astype(np.float64).ravel()
        assert np.corrcoef(reduced, full)[0, 1] > 0.95  # a rotated copy: about 0.44
