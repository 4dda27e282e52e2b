"""Bad (and awkward but valid) files made by the tests: every format, truncation and bomb of the corpus."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from functools import cache

import numpy as np
from PIL import Image

from tests.service import images

GOOD_JPEG_SEED = 42


def _save(image: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


def _slice(size: int = 64) -> Image.Image:
    return Image.fromarray(images.mri_slice(7, size=size))


@cache
def good_jpeg() -> bytes:
    return images.jpeg(GOOD_JPEG_SEED, size=64, cls=0)


@cache
def good_png() -> bytes:
    return images.encode(images.mri_slice(43, size=64), "PNG")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


@cache
def png_bomb(side: int = 20000) -> bytes:
    """A real ``side`` x ``side`` 1-bit PNG of zeros: ~60 KB on the wire, 400 megapixels decoded."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row * 500) for _ in range(side // 500)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def jpeg_bomb() -> bytes:
    """A small JPEG whose frame header declares 65000 x 65000 pixels."""
    data = bytearray(good_jpeg())
    sof = next(i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC2))
    data[sof + 5 : sof + 9] = struct.pack(">HH", 65000, 65000)
    return bytes(data)


def png_bad_crc() -> bytes:
    data = bytearray(good_png())
    data[29] ^= 0xFF  # inside the IHDR CRC
    return bytes(data)


def png_bad_zlib() -> bytes:
    header = struct.pack(">IIBBBBB", 64, 64, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", b"\x78\x9c" + bytes(range(200)))
        + _png_chunk(b"IEND", b"")
    )


def gif(animated: bool = False) -> bytes:
    frames = [_slice().convert("P"), _slice(64).rotate(90).convert("P")]
    if animated:
        return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return _save(frames[0], "GIF")


def tiff() -> bytes:
    return _save(_slice(), "TIFF")


def webp() -> bytes:
    return _save(_slice(), "WEBP")


def bmp() -> bytes:
    return _save(_slice(), "BMP")


def pdf() -> bytes:
    return _save(_slice().convert("RGB"), "PDF")


def ico() -> bytes:
    return _save(_slice(), "ICO")


def one_pixel(fmt: str) -> bytes:
    return _save(Image.new("RGB", (1, 1), (128, 128, 128)), fmt)


def thin_png() -> bytes:
    """100000 x 1 pixels: under the pixel limit, under the minimum side."""
    return _save(Image.new("L", (100000, 1)), "PNG")


def huge_exif_jpeg() -> bytes:
    """A valid JPEG carrying a maximal (~64 KB) EXIF block."""
    exif = Image.Exif()
    exif[0x010E] = "A" * 65000  # ImageDescription
    return _save(_slice(), "JPEG", exif=exif.tobytes())


def many_metadata_segments_jpeg(count: int = 80) -> bytes:
    """A valid JPEG with ``count`` 64 KB APP segments (~5 MB of metadata) after SOI."""
    data = good_jpeg()
    segment = b"\xff\xe2" + struct.pack(">H", 65535) + b"X" * 65533
    return data[:2] + segment * count + data[2:]


def malformed_exif_jpeg() -> bytes:
    """A JPEG whose EXIF block points its first IFD far outside the block."""
    body = b"Exif\x00\x00" + b"MM\x00\x2a" + struct.pack(">I", 0x7FFFFFF0) + b"\x00" * 16
    segment = b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body
    data = good_jpeg()
    return data[:2] + segment + data[2:]


def exif_orientation_garbage_jpeg() -> bytes:
    """An EXIF Orientation tag with a value outside 1..8, and of the wrong type."""
    exif = Image.Exif()
    exif[0x0112] = 77
    return _save(_slice(), "JPEG", exif=exif.tobytes())


def cmyk_jpeg() -> bytes:
    return _save(_slice().convert("CMYK"), "JPEG")


def gray16_png() -> bytes:
    return images.png_variants()["gray16"]


def palette_transparent_png() -> bytes:
    image = _slice().convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    return _save(image, "PNG", transparency=0)


def la_png() -> bytes:
    return _save(_slice().convert("LA"), "PNG")


def one_bit_png() -> bytes:
    return _save(_slice().convert("1"), "PNG")


def progressive_jpeg() -> bytes:
    return _save(_slice(), "JPEG", progressive=True, quality=80)


def grayscale_jpeg() -> bytes:
    return _save(_slice().convert("L"), "JPEG")


def _dicom_dataset(**tags: object) -> tuple[object, object]:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    for key, value in tags.items():
        setattr(ds, key, value)
    return ds, meta


def _dicom_bytes(ds: object) -> bytes:
    from pydicom import dcmwrite

    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)  # type: ignore[arg-type]
    return buf.getvalue()


def dicom_image(patient_name: str = "Anonymous", patient_id: str = "0", frames: int = 1) -> bytes:
    """A 12-bit MONOCHROME2 DICOM slice carrying the given patient tags (``frames`` > 1: multi-frame)."""
    pixels = images.mri_slice(5, size=64)[:, :, 0].astype(np.uint16) * 16
    if frames > 1:
        pixels = np.stack([pixels] * frames)
    return images.make_dicom(pixels, bits=12, frames=frames, patient=patient_name, patient_id=patient_id)


def dicom_with_bad_tag(name: str, value: str, **valid: object) -> bytes:
    """A DICOM slice whose tag ``name`` holds ``value`` (5+ characters), text not valid for its VR: written past
    pydicom's checks by replacing a valid placeholder of the same length in the bytes."""
    import pydicom

    assert 5 <= len(value) <= 10
    placeholder = "9876543210"[: len(value)]
    ds = pydicom.dcmread(io.BytesIO(dicom_image()))
    for key, good in valid.items():
        setattr(ds, key, good)
    setattr(ds, name, placeholder)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    assert data.count(placeholder.encode()) == 1
    return data.replace(placeholder.encode(), value.encode())


def long_thin_png(width: int = 30000, height: int = 8) -> bytes:
    """240,000 pixels: under the limit, but padded to a square it would be 30000^2 x 3 bytes (2.7 GB)."""
    return _save(Image.new("L", (width, height), 120), "PNG")


def dicom_without_pixels() -> bytes:
    ds, _ = _dicom_dataset(PatientName="Nobody")
    return _dicom_bytes(ds)


def dicom_compressed() -> bytes:
    """A DICOM declaring JPEG 2000 pixel data (encapsulated garbage)."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    ds, meta = _dicom_dataset(Rows=64, Columns=64, SamplesPerPixel=1, PhotometricInterpretation="MONOCHROME2")
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0  # type: ignore[attr-defined]
    meta.TransferSyntaxUID = JPEG2000Lossless  # type: ignore[attr-defined]
    ds.PixelData = encapsulate([b"\x00" * 100])  # type: ignore[attr-defined]
    ds["PixelData"].VR = "OB"  # type: ignore[index]
    ds["PixelData"].is_undefined_length = True  # type: ignore[index]
    return _dicom_bytes(ds)


def dicom_garbage() -> bytes:
    return b"\x00" * 128 + b"DICM" + bytes(range(256)) * 4


def dicom_truncated() -> bytes:
    data = dicom_image()
    return data[: len(data) // 2]


def random_bytes() -> bytes:
    return np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()


HTML = b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="64" height="64"/></svg>'
TEXT = b"this is not an image\n"


Factory = Callable[[], bytes]

#: name -> (a factory of the file, the expected status, a fragment of the expected error)
BAD_FILES: dict[str, tuple[Factory, int, str]] = {
    "zero-byte file": (lambda: b"", 400, "empty image"),
    "truncated JPEG": (lambda: good_jpeg()[: len(good_jpeg()) // 2], 400, "could not decode the JPEG"),
    "JPEG header only": (lambda: good_jpeg()[:4], 400, "could not decode the JPEG"),
    "truncated PNG": (lambda: good_png()[: len(good_png()) // 2], 400, "could not decode the PNG"),
    "PNG signature only": (lambda: good_png()[:8], 400, "could not decode the PNG"),
    "PNG with a bad CRC": (png_bad_crc, 400, "could not decode the PNG"),
    "PNG with corrupt zlib data": (png_bad_zlib, 400, "could not decode the PNG"),
    "random bytes": (random_bytes, 415, "not a JPEG, PNG or DICOM"),
    "text": (lambda: TEXT, 415, "not a JPEG, PNG or DICOM"),
    "HTML": (lambda: HTML, 415, "not a JPEG, PNG or DICOM"),
    "SVG": (lambda: SVG, 415, "not a JPEG, PNG or DICOM"),
    "PDF": (pdf, 415, "unsupported image format PDF"),
    "GIF": (gif, 415, "unsupported image format GIF"),
    "animated GIF": (lambda: gif(animated=True), 415, "unsupported image format GIF"),
    "TIFF": (tiff, 415, "unsupported image format TIFF"),
    "WebP": (webp, 415, "unsupported image format WEBP"),
    "BMP": (bmp, 415, "unsupported image format BMP"),
    "ICO": (ico, 415, "not a JPEG, PNG or DICOM"),
    "1x1 PNG": (lambda: one_pixel("PNG"), 400, "1x1"),
    "1x1 JPEG": (lambda: one_pixel("JPEG"), 400, "1x1"),
    "100000x1 PNG": (thin_png, 400, "100000x1"),
    "20000x20000 PNG bomb": (png_bomb, 413, "too large"),
    "65000x65000 JPEG bomb": (jpeg_bomb, 413, "too large"),
    "DICOM magic then garbage": (dicom_garbage, 400, "DICOM"),
    "truncated DICOM": (dicom_truncated, 400, "DICOM"),
    "DICOM without pixel data": (dicom_without_pixels, 400, "no image"),
    "multi-frame DICOM": (lambda: dicom_image(frames=3), 400, "multi-frame"),
    "JPEG 2000 DICOM": (dicom_compressed, 415, "transfer syntax"),
    "DICOM window centre not a number": (
        lambda: dicom_with_bad_tag("WindowCenter", "CENTRE", WindowWidth="400"),
        400,
        "could not decode the DICOM",
    ),
    "DICOM window width not a number": (
        lambda: dicom_with_bad_tag("WindowWidth", "WIDEST", WindowCenter="40"),
        400,
        "could not decode the DICOM",
    ),
    "DICOM frame count not a number": (lambda: dicom_with_bad_tag("NumberOfFrames", "THREE"), 400, "DICOM"),
    "DICOM photometric interpretation garbage": (
        lambda: dicom_with_bad_tag("PhotometricInterpretation", "1234.5678"),
        400,
        "DICOM",
    ),
}

#: Valid images in unusual shapes: all accepted (200).
AWKWARD_GOOD_FILES: dict[str, Factory] = {
    "huge EXIF block": huge_exif_jpeg,
    "5 MB of APP segments": many_metadata_segments_jpeg,
    "malformed EXIF": malformed_exif_jpeg,
    "out-of-range EXIF orientation": exif_orientation_garbage_jpeg,
    "16-bit grayscale PNG": gray16_png,
    "CMYK JPEG": cmyk_jpeg,
    "palette PNG with transparency": palette_transparent_png,
    "gray+alpha PNG": la_png,
    "1-bit PNG": one_bit_png,
    "progressive JPEG": progressive_jpeg,
    "grayscale JPEG": grayscale_jpeg,
    "8x8 PNG (the smallest accepted)": lambda: _save(Image.new("L", (8, 8), 90), "PNG"),
    "DICOM": dicom_image,
    "30000x8 PNG": long_thin_png,
}
