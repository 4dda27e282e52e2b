"""Single-frame DICOM decoding with pydicom: modality LUT (rescale slope/intercept), VOI LUT or window,
MONOCHROME1 inversion, then 8-bit RGB.

No tag value ever leaves this module. pydicom is configured when the module is imported: no validation of
values on read (whose warnings quote them), its logger silenced and detached from the root logger, and
warnings raised in pydicom (or attributed to this module) filtered by module. No ``catch_warnings`` on the
request path (it is not thread-safe: restoring the filters it saved can undo another thread's); each decode
only puts the filters back in front when something has reset or overtaken them. Any exception a malformed
file raises becomes a fixed 400 reason (never a 500 whose logged traceback would quote a tag).

Memory is bounded from the header before any pixel is decoded: ``service.imaging.pixels.decoded_bytes`` estimates the
peak from rows, columns, samples per pixel, bits allocated and frames, and an image over the budget derived
from the pixel limit (``decode_budget_bytes``) is refused with 413.
"""

from __future__ import annotations

import io
import logging
import warnings
from typing import Any

import numpy as np
import pydicom
from pydicom import config as pydicom_config
from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array

from service.errors import BadImageError, PayloadTooLargeError, ServiceError, UnsupportedMediaTypeError
from service.imaging.pixels import decode_budget_bytes, decoded_bytes, window_to_uint8

#: Loggers silenced and detached from the root logger: pydicom's, and highdicom's (DICOM results).
_QUIET_LOGGERS = tuple(logging.getLogger(name) for name in ("pydicom", "highdicom"))
#: Modules whose warnings are dropped: pydicom's and highdicom's, and this one (pydicom attributes some of
#: its warnings to the caller with ``stacklevel``).
_QUIET_MODULES = (r"pydicom(\.|$)", r"highdicom(\.|$)", r"service\.dicom$")


def _filters_in_front() -> bool:
    """Whether the first filters are this module's ``ignore`` filters (nothing ahead of them can show a
    pydicom warning)."""
    front = warnings.filters[: len(_QUIET_MODULES)]
    installed = {f[3].pattern for f in front if f[0] == "ignore" and f[1] is None and f[3] is not None}
    return installed == set(_QUIET_MODULES)


def quiet_pydicom() -> None:
    """Configure pydicom (and highdicom) to say nothing: set at import; cheap to call again, as each decode
    does, and anything else that reads or writes DICOM should."""
    if pydicom_config.settings.reading_validation_mode != pydicom_config.IGNORE:
        pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    for logger in _QUIET_LOGGERS:
        if logger.level <= logging.CRITICAL or logger.propagate:
            logger.setLevel(logging.CRITICAL + 1)
            logger.propagate = False
    if not _filters_in_front():
        for module in reversed(_QUIET_MODULES):
            warnings.filterwarnings("ignore", module=module)


quiet_pydicom()


def decode_dicom(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode a single-frame DICOM image to 8-bit pixels: a (H, W) plane for MONOCHROME images, (H, W, 3) RGB
    for colour ones (``service.imaging.pixels.as_rgb`` makes either RGB)."""
    quiet_pydicom()
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


def _check_size(ds: Any, max_pixels: int) -> None:
    """413 for an image over the pixel limit, or whose decoding would take more than the budget."""
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        raise BadImageError("multi-frame DICOM is not accepted; send a single slice")
    rows, cols = int(getattr(ds, "Rows", 0) or 0), int(getattr(ds, "Columns", 0) or 0)
    if rows * cols > max_pixels:
        raise PayloadTooLargeError(f"image has {cols}x{rows} pixels, over the limit of {max_pixels}")
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    bits = int(getattr(ds, "BitsAllocated", 8) or 8)
    needed, budget = decoded_bytes(rows, cols, samples, bits, frames), decode_budget_bytes(max_pixels)
    if needed > budget:
        raise PayloadTooLargeError(
            f"image of {cols}x{rows} pixels x {samples} samples x {bits} bits would take {needed >> 20} MB "
            f"to decode, over the limit of {budget >> 20} MB"
        )


def _decode(ds: Any, max_pixels: int) -> np.ndarray:
    if "PixelData" not in ds:
        raise BadImageError("DICOM object holds no image")
    _check_size(ds, max_pixels)
    try:
        pixels = pixel_array(ds, as_rgb=True)  # YBR_FULL and YBR_FULL_422 come back as RGB
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
        gray = window_to_uint8(np.asarray(values))
        return 255 - gray if photometric == "MONOCHROME1" else gray
    if photometric in ("RGB", "YBR_FULL", "YBR_FULL_422") and pixels.ndim == 3 and pixels.shape[2] == 3:
        if pixels.dtype != np.uint8:
            return window_to_uint8(pixels)
        return np.ascontiguousarray(pixels)
    raise UnsupportedMediaTypeError(f"unsupported DICOM photometric interpretation {photometric}")
