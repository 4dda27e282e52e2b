"""Image decoding and resizing: bytes in, the model's input array out.

Training and serving both call :func:`preprocess`, so the two cannot drift apart. The format is detected from
the bytes (never from a file name or a declared content type). Every accepted format is converted the same way:

1. decode (JPEG, PNG or single-frame DICOM), refusing images over ``max_pixels`` before the pixels are read;
   a JPEG of at least four times the model input on both sides is decoded at 1/2, 1/4 or 1/8 scale in the
   DCT domain, keeping both sides at least twice the model input (:func:`model_pixels`);
2. convert to 8-bit RGB: EXIF orientation applied, transparency composited on black (MRI background),
   16-bit and DICOM intensities windowed to 0-255, CMYK and palette images converted;
3. optionally crop to the brain (bounding box of the foreground, with a margin);
4. pad to a square with black, then resize to ``image_size`` x ``image_size`` (bilinear).

The result is a ``uint8`` array of shape (size, size, 3) with values in [0, 255]; the model normalises inside.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import ExifTags, Image, ImageChops, ImageFile, ImageOps, UnidentifiedImageError

from service.errors import BadImageError, PayloadTooLargeError, UnsupportedMediaTypeError
from service.imaging.pixels import MAX_PIXELS, MIN_SIDE, as_rgb, check_pixels, window_to_uint8

DEFAULT_IMAGE_SIZE = 224
#: Images longer than this are shrunk before padding: padding a 40000 x 8 strip to a square would allocate
#: 40000^2 x 3 bytes (4.8 GB) for a file of a few hundred bytes. Smaller images take the exact path.
MAX_PADDED_SIDE = 2048
#: A JPEG is decoded at reduced scale only while both its sides stay at least this many times the model input.
DECODE_MARGIN = 2

ImageFile.LOAD_TRUNCATED_IMAGES = False
#: Set once, not per image (``warnings.catch_warnings`` is not thread-safe: restoring the filters it saved can
#: undo another thread's). Should something reset the filters, ``check_pixels`` still refuses the image.
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_DICOM_MAGIC_OFFSET = 128
_OTHER_FORMATS: dict[bytes, str] = {
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"%PDF": "PDF",
}


@dataclass(frozen=True)
class PreprocessConfig:
    """How an image becomes a model input; stored in the model's metadata and re-applied by the service."""

    image_size: int = DEFAULT_IMAGE_SIZE
    crop_brain: bool = False
    crop_margin: float = 0.05

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "pad_to_square": True,
            "resample": "bilinear",
            "dtype": "float32",
            "value_range": [0, 255],
            "channels": "RGB",
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        return cls(
            image_size=int(data.get("image_size", DEFAULT_IMAGE_SIZE)),
            crop_brain=bool(data.get("crop_brain", False)),
            crop_margin=float(data.get("crop_margin", 0.05)),
        )


def sniff_format(data: bytes) -> str:
    """Return ``"JPEG"``, ``"PNG"`` or ``"DICOM"`` from the leading bytes, or raise a 400/415 error."""
    if not data:
        raise BadImageError("empty image")
    if data.startswith(_JPEG_MAGIC):
        return "JPEG"
    if data.startswith(_PNG_MAGIC):
        return "PNG"
    if len(data) >= _DICOM_MAGIC_OFFSET + 4 and data[_DICOM_MAGIC_OFFSET : _DICOM_MAGIC_OFFSET + 4] == b"DICM":
        return "DICOM"
    for magic, name in _OTHER_FORMATS.items():
        if data.startswith(magic):
            raise UnsupportedMediaTypeError(f"unsupported image format {name}; send JPEG, PNG or DICOM")
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        raise UnsupportedMediaTypeError("unsupported image format WEBP; send JPEG, PNG or DICOM")
    raise UnsupportedMediaTypeError("not a JPEG, PNG or DICOM image")


def _has_orientation(image: Image.Image) -> bool:
    """Whether EXIF asks for a rotation or flip (``exif_transpose`` otherwise only copies the image)."""
    return image.getexif().get(ExifTags.Base.Orientation, 1) not in (1, None)


def _grey_plane(image: Image.Image) -> np.ndarray | None:
    """The one plane of an RGB image whose three channels are equal (most MRI JPEGs), else None.

    Comparing the bands in Pillow costs less than the RGB array alone (Pillow stores RGB as 4 bytes a pixel
    and packs them into 3 for NumPy), and every later step then works on a third of the bytes."""
    red, green, blue = image.split()
    if ImageChops.difference(red, green).getbbox() is None and ImageChops.difference(red, blue).getbbox() is None:
        return np.asarray(red, dtype=np.uint8)
    return None


def _pil_pixels(image: Image.Image) -> np.ndarray:
    """8-bit pixels of a decoded PIL image: a (H, W) plane when it is grey, (H, W, 3) RGB otherwise."""
    image = ImageOps.exif_transpose(image) if _has_orientation(image) else image
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return window_to_uint8(np.asarray(image))
    if mode == "P":
        image = image.convert("RGBA")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(black, rgba)
    if image.mode == "1":
        image = image.convert("L")
    if image.mode == "L":
        return np.asarray(image, dtype=np.uint8)
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    grey = _grey_plane(rgb)
    return grey if grey is not None else np.asarray(rgb, dtype=np.uint8)


def _decode_pil(data: bytes, fmt: str, max_pixels: int, min_side: int | None = None) -> np.ndarray:
    try:
        image = Image.open(io.BytesIO(data), formats=[fmt])
        check_pixels(image.width, image.height, max_pixels)
        if getattr(image, "n_frames", 1) > 1:
            raise BadImageError("animated or multi-frame images are not accepted")
        if min_side and fmt == "JPEG":  # libjpeg's scaled IDCT: 1/2, 1/4 or 1/8, both sides kept >= min_side
            image.draft(image.mode, (min_side, min_side))
        image.load()
        return _pil_pixels(image)
    except (PayloadTooLargeError, BadImageError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PayloadTooLargeError("image is too large (decompression bomb protection)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise BadImageError(f"could not decode the {fmt} image (corrupt or truncated)") from None


def decode_pixels(data: bytes, max_pixels: int = MAX_PIXELS, min_side: int | None = None) -> np.ndarray:
    """Decode JPEG, PNG or DICOM bytes to 8-bit pixels: a (H, W) plane when the image is grey (every channel
    equal), else (H, W, 3) RGB. ``as_rgb`` of it is :func:`decode_image`.

    Of the image's own size, except that with ``min_side`` a JPEG at least twice that on both sides is decoded
    at 1/2, 1/4 or 1/8 of its size in the DCT domain (both sides still at least ``min_side``): the inverse DCT,
    the chroma upsampling and every later step then work on a quarter of the pixels or fewer."""
    fmt = sniff_format(data)
    if fmt == "DICOM":
        from service.imaging.dicom import decode_dicom

        pixels = decode_dicom(data, max_pixels=max_pixels)
    else:
        pixels = _decode_pil(data, fmt, max_pixels, min_side)
    check_pixels(pixels.shape[1], pixels.shape[0], max_pixels)
    return pixels


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode JPEG, PNG or DICOM bytes to an 8-bit RGB array of the image's own size."""
    return as_rgb(decode_pixels(data, max_pixels))


def _mean_percentile(values: np.ndarray, channels: int, q: float) -> float:
    """``np.percentile(values / float(channels), q)`` (linear method) bit for bit, for integer ``values`` in
    0..255 * ``channels`` (channel sums): the two order statistics come from a histogram instead of a partition
    of every pixel, then are interpolated with NumPy's own formula (``_lerp``)."""
    n = values.size
    virtual = (q / 100.0) * (n - 1)
    below = int(np.floor(virtual))
    gamma = virtual - below
    if values.dtype == np.uint8 and values.ndim == 2:  # Pillow's histogram: NumPy's bincount widens to int64 first
        counts = np.asarray(Image.fromarray(np.ascontiguousarray(values)).histogram(), dtype=np.int64)
    else:
        counts = np.bincount(values.ravel(), minlength=255 * channels + 1)
    cumulative = np.cumsum(counts)
    low, high = np.searchsorted(cumulative, [below, min(below + 1, n - 1)], side="right")
    a, b = np.float64(low) / channels, np.float64(high) / channels
    diff = b - a
    return float(b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma)


def brain_bounding_box(pixels: np.ndarray, margin: float = 0.05) -> tuple[int, int, int, int]:
    """Bounding box (top, bottom, left, right) of the foreground: rows/columns with enough bright pixels.

    ``pixels`` is RGB (the brightness of a pixel is the mean of its channels) or one grey plane (the same
    mean, exactly: ``3 * v / 3.0 == v``), so both give the same box for the same image."""
    if pixels.ndim == 2:
        channels, total = 1, pixels
    else:  # the channel sum: ``rgb.mean(axis=2)`` is ``total / 3.0``
        channels, total = 3, pixels[:, :, 0].astype(np.uint16)
        total += pixels[:, :, 1]
        total += pixels[:, :, 2]
    height, width = pixels.shape[:2]
    peak = _mean_percentile(total, channels, 99.5)
    if peak <= 0:
        return 0, height, 0, width
    # ``total / channels > threshold`` as an integer comparison: the smallest sum whose mean is above it
    threshold = max(10.0, 0.1 * peak)
    above = int(np.searchsorted(np.arange(255 * channels + 1) / float(channels), threshold, side="right"))
    mask = (total >= above).view(np.uint8)  # bright pixels per row and column, summed as bytes (count_nonzero
    rows = np.flatnonzero(np.add.reduce(mask, axis=1, dtype=np.uint32) > 0.02 * width)  # is 4x slower)
    cols = np.flatnonzero(np.add.reduce(mask, axis=0, dtype=np.uint32) > 0.02 * height)
    if rows.size == 0 or cols.size == 0:
        return 0, height, 0, width
    pad_r, pad_c = int(margin * height), int(margin * width)
    top, bottom = max(0, rows[0] - pad_r), min(height, rows[-1] + 1 + pad_r)
    left, right = max(0, cols[0] - pad_c), min(width, cols[-1] + 1 + pad_c)
    if (bottom - top) < MIN_SIDE or (right - left) < MIN_SIDE:
        return 0, height, 0, width
    return int(top), int(bottom), int(left), int(right)


def model_pixels(data: bytes, config: PreprocessConfig, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decoded pixels as :func:`to_model_input` takes them: large JPEGs decoded at reduced scale, but never
    below ``DECODE_MARGIN`` times the model input on either side, so a brain crop of half the image or more is
    still shrunk, never enlarged. Training and serving both decode with this."""
    return decode_pixels(data, max_pixels=max_pixels, min_side=DECODE_MARGIN * config.image_size)


def to_model_input(pixels: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Crop (optionally), pad to square and resize decoded pixels (RGB, or one grey plane: the same result as
    its RGB, in a third of the work) to the model's input, (size, size, 3) RGB."""
    if config.crop_brain:
        top, bottom, left, right = brain_bounding_box(pixels, config.crop_margin)
        pixels = pixels[top:bottom, left:right]
    height, width = pixels.shape[:2]
    side = max(height, width)
    if side > MAX_PADDED_SIDE:
        scale = MAX_PADDED_SIDE / side
        shrunk = (max(1, round(width * scale)), max(1, round(height * scale)))
        pixels = np.asarray(Image.fromarray(pixels).resize(shrunk, Image.Resampling.BILINEAR), dtype=np.uint8)
        height, width = pixels.shape[:2]
        side = max(height, width)
    if height != width:
        square = np.zeros((side, side, *pixels.shape[2:]), dtype=np.uint8)
        y0, x0 = (side - height) // 2, (side - width) // 2
        square[y0 : y0 + height, x0 : x0 + width] = pixels
        pixels = square
    size = config.image_size
    if side != size:
        pixels = np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
    return as_rgb(pixels)


def preprocess(data: bytes, config: PreprocessConfig, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Bytes of a JPEG/PNG/DICOM file to a ``uint8`` (size, size, 3) model input."""
    return to_model_input(model_pixels(data, config, max_pixels), config)


def thumbnail(rgb: np.ndarray, side: int = 32) -> np.ndarray:
    """Standardised grayscale thumbnail used by the duplicate finder (zero mean, unit norm)."""
    gray = Image.fromarray(rgb).convert("L").resize((side, side), Image.Resampling.BOX)
    vec = np.asarray(gray, dtype=np.float32).ravel()
    vec = vec - vec.mean()
    norm = float(np.linalg.norm(vec))
    return vec / norm if norm > 0 else vec
