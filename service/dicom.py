"""Single-frame DICOM decoding with pydicom: modality LUT (rescale slope/intercept), VOI LUT or window,
MONOCHROME1 inversion, then 8-bit RGB. No tag value ever leaves this function: pydicom's value validation
(whose warnings quote the value) is off, its log and warnings are silenced, and any exception a malformed
file raises becomes a fixed 400 reason (never a 500 whose logged traceback would quote a tag)."""

from __future__ import annotations

import io
import logging
import warnings
from functools import cache
from typing import Any

import numpy as np

from service.errors import BadImageError, PayloadTooLargeError, ServiceError, UnsupportedMediaTypeError


@cache
def _quiet_pydicom() -> None:
    """Once per process: no validation of values on read, nothing from pydicom in the log or on stderr."""
    from pydicom import config

    config.settings.reading_validation_mode = config.IGNORE
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")


def decode_dicom(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode a single-frame DICOM image to an 8-bit RGB array."""
    import pydicom

    _quiet_pydicom()
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=False)
    except MemoryError:
        raise
    except Exception:  # InvalidDicomError, EOFError, struct errors, unknown VRs...: a client's bad file
        raise BadImageError("could not parse the DICOM file") from None
    try:
        return _decode(ds, max_pixels)
    except (ServiceError, MemoryError):
        raise
    except Exception:  # malformed tags (a window centre that is not a number...): a client's bad file
        raise BadImageError("could not decode the DICOM pixel data") from None


def _decode(ds: Any, max_pixels: int) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    from service.preprocessing import _gray_to_rgb, _window_to_uint8

    if "PixelData" not in ds:
        raise BadImageError("DICOM object holds no image")
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        raise BadImageError("multi-frame DICOM is not accepted; send a single slice")
    rows, cols = int(getattr(ds, "Rows", 0) or 0), int(getattr(ds, "Columns", 0) or 0)
    if rows * cols > max_pixels:
        raise PayloadTooLargeError(f"image has {cols}x{rows} pixels, over the limit of {max_pixels}")
    try:
        pixels = ds.pixel_array
    except (NotImplementedError, RuntimeError) as exc:
        if "transfer syntax" in str(exc).lower() or "plugin" in str(exc).lower() or "handler" in str(exc).lower():
            raise UnsupportedMediaTypeError("compressed DICOM transfer syntax not supported") from None
        raise BadImageError("could not decode the DICOM pixel data") from None
    except (ValueError, AttributeError, KeyError, TypeError, OSError, EOFError):
        raise BadImageError("could not decode the DICOM pixel data") from None
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric.startswith("MONOCHROME"):
        if pixels.ndim != 2:
            raise BadImageError("unexpected DICOM pixel array shape")
        values = apply_modality_lut(pixels, ds)
        values = apply_voi_lut(values, ds, index=0)
        gray = _window_to_uint8(np.asarray(values))
        if photometric == "MONOCHROME1":
            gray = 255 - gray
        return _gray_to_rgb(gray)
    if photometric in ("RGB", "YBR_FULL", "YBR_FULL_422") and pixels.ndim == 3 and pixels.shape[2] == 3:
        if photometric != "RGB":
            from pydicom.pixels import convert_color_space

            pixels = convert_color_space(pixels, photometric, "RGB")
        if pixels.dtype != np.uint8:
            return _window_to_uint8(pixels)
        return np.ascontiguousarray(pixels)
    raise UnsupportedMediaTypeError(f"unsupported DICOM photometric interpretation {photometric}")
