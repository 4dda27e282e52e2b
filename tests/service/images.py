"""Images made by the tests: MRI-like slices and their encodings (JPEG, PNG variants, DICOM)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image


def mri_slice(seed: int, size: int = 96, width: int | None = None, cls: int | None = None) -> np.ndarray:
    """A textured gray 'brain' ellipse on black (uint8 RGB) with a lesion: placed by ``seed``, or, when ``cls``
    is given, where that class puts it (0 large upper-left blob, 1 crescent at the top edge, 2 none, 3 small
    bright spot low in the middle) so that a model can learn the four classes in a few steps."""
    rng = np.random.default_rng(seed)
    height, width = size, width or size
    yy, xx = np.mgrid[0:height, 0:width]
    yy, xx = yy / height, xx / width
    cy, cx = 0.5 + rng.uniform(-0.05, 0.05, 2)
    ry, rx = rng.uniform(0.33, 0.43), rng.uniform(0.28, 0.38)
    ellipse = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
    brain = ellipse < 1
    texture = 20 * np.sin(rng.uniform(5, 20) * xx + rng.uniform(0, 6)) * np.cos(rng.uniform(5, 20) * yy)
    image = np.where(brain, 70 + texture + rng.normal(0, 10, (height, width)), 0.0)
    if cls is None:
        ly, lx, radius = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.04, 0.14)
        image += rng.uniform(60, 170) * ((((yy - ly) ** 2 + (xx - lx) ** 2) < radius**2) & brain)
    elif cls == 0:
        ly, lx = cy - 0.12 + rng.uniform(-0.04, 0.04), cx - 0.14 + rng.uniform(-0.04, 0.04)
        image += 150 * ((((yy - ly) / 0.13) ** 2 + ((xx - lx) / 0.10) ** 2) < 1)
    elif cls == 1:
        image += 150 * ((ellipse > 0.7) & brain & (yy < cy))
    elif cls == 3:
        image += 170 * (((yy - cy - 0.22) ** 2 + (xx - cx) ** 2) < 0.06**2)
    gray = np.clip(image, 0, 255).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def encode(array: np.ndarray, fmt: str = "JPEG", **params: object) -> bytes:
    """Encode an array with Pillow (``fmt`` JPEG or PNG)."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **params)
    return buf.getvalue()


def jpeg(seed: int, size: int = 96, cls: int | None = None) -> bytes:
    return encode(mri_slice(seed, size, cls=cls), "JPEG", quality=92)


def png_variants(seed: int = 3) -> dict[str, bytes]:
    """The same slice as PNG in the modes a scanner export may use."""
    rgb = mri_slice(seed)
    gray = rgb[:, :, 0]
    rgba = np.dstack([rgb, np.full(gray.shape, 255, np.uint8)])
    return {
        "rgb": encode(rgb, "PNG"),
        "gray8": encode(gray, "PNG"),
        "gray16": encode((gray.astype(np.uint16) * 257), "PNG"),
        "rgba": encode(rgba, "PNG"),
        "palette": _palette_png(rgb),
    }


def _palette_png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(buf, format="PNG")
    return buf.getvalue()


def make_dicom(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits: int = 16,
    slope: float = 1.0,
    intercept: float = 0.0,
    window: tuple[float, float] | None = None,
    frames: int = 1,
    patient: str = "Doe^Jane",
    patient_id: str = "MRN-0042",
    transfer_syntax: str | None = None,
    encapsulated: bytes | None = None,
    tags: dict[str, Any] | None = None,
) -> bytes:
    """A minimal MR image object as a DICOM Part 10 file (the one DICOM builder of the tests); ``tags`` sets more
    attributes by keyword (``None`` removes one)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax or ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = patient
    ds.PatientID = patient_id
    ds.Modality = "MR"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16 if bits > 8 else 8
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if frames > 1:
        ds.NumberOfFrames = frames
    dtype = np.uint16 if bits > 8 else np.uint8
    ds.PixelData = encapsulate([encapsulated]) if encapsulated else pixels.astype(dtype).tobytes()
    for keyword, value in (tags or {}).items():
        if value is not None:
            setattr(ds, keyword, value)
        elif keyword in ds:
            delattr(ds, keyword)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def dicom(seed: int = 5) -> bytes:
    """A single-frame 12-bit MONOCHROME2 DICOM file, written in memory."""
    return make_dicom(mri_slice(seed)[:, :, 0].astype(np.uint16) * 16, bits=12)


def reference_input(data: bytes, size: int) -> np.ndarray:
    """A JPEG/PNG's model input derived independently of ``service.imaging.preprocessing``: Pillow decodes to RGB,
    the image is centred on a black square and resized bilinearly to ``size`` (no crop)."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("RGB")
    side = max(image.size)
    square = Image.new("RGB", (side, side))
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return np.asarray(square.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
