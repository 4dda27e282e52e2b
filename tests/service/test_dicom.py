"""Single-frame DICOM decoding: modality and VOI LUTs, MONOCHROME1, bit depths, refusals."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from pydicom.uid import JPEGBaseline8Bit, JPEGLSLossless

from service.errors import BadImageError, UnsupportedMediaTypeError
from service.preprocessing import PreprocessConfig, decode_image, preprocess
from tests.service.images import make_dicom
from tests.synthetic import mri_like


@pytest.fixture(scope="module")
def gray() -> np.ndarray:
    return mri_like(3, np.random.default_rng(5), 64)[:, :, 0]


def png(gray: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, format="PNG")
    return buf.getvalue()


def test_8_bit_dicom_equals_the_same_pixels_as_png(gray):
    cfg = PreprocessConfig(32)
    np.testing.assert_array_equal(preprocess(make_dicom(gray, bits=8), cfg), preprocess(png(gray), cfg))


def test_12_bit_with_rescale_is_windowed_like_the_png(gray):
    stored = gray.astype(np.uint16) * 16  # 12-bit stored values
    data = make_dicom(stored, bits=12, slope=2.0, intercept=-100.0)
    np.testing.assert_array_equal(decode_image(data), decode_image(png(gray)))


def test_monochrome1_is_inverted(gray):
    normal = decode_image(make_dicom(gray, bits=8))
    inverted = decode_image(make_dicom(gray, bits=8, photometric="MONOCHROME1"))
    np.testing.assert_array_equal(inverted, 255 - normal)


def test_window_centre_width_is_applied(gray):
    stored = gray.astype(np.uint16) * 16
    narrow = decode_image(make_dicom(stored, bits=12, window=(1000.0, 400.0)))
    plain = decode_image(make_dicom(stored, bits=12))
    assert not np.array_equal(narrow, plain)
    assert (narrow == 255).mean() > (plain == 255).mean()  # the narrow window saturates bright tissue


def test_multi_frame_is_refused(gray):
    data = make_dicom(np.stack([gray, gray]), bits=8, frames=2)
    with pytest.raises(BadImageError, match="multi-frame"):
        decode_image(data)


def test_object_without_pixels_is_refused(gray):
    data = make_dicom(gray, bits=8)
    from pydicom import dcmread

    ds = dcmread(io.BytesIO(data))
    del ds.PixelData
    buf = io.BytesIO()
    ds.save_as(buf)
    with pytest.raises(BadImageError, match="no image"):
        decode_image(buf.getvalue())


def test_corrupt_dicom_is_refused():
    with pytest.raises(BadImageError):
        decode_image(b"\0" * 128 + b"DICM" + b"\x02\x00garbage")


def test_jpeg_baseline_dicom_is_decoded(gray):
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, format="JPEG", quality=95)
    data = make_dicom(gray, bits=8, transfer_syntax=JPEGBaseline8Bit, encapsulated=buf.getvalue())
    out = decode_image(data)
    assert out.shape == (64, 64, 3) and np.abs(out[:, :, 0].astype(int) - gray).mean() < 6


def test_compressed_syntax_without_a_plugin_is_415(gray):
    data = make_dicom(gray, bits=8, transfer_syntax=JPEGLSLossless, encapsulated=b"\xff\xd8\xff\xf7" + b"\0" * 64)
    with pytest.raises(UnsupportedMediaTypeError, match="transfer syntax"):
        decode_image(data)
