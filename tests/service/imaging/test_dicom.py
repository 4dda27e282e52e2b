"""Single-frame DICOM decoding: modality and VOI LUTs, MONOCHROME1, bit depths, refusals."""

from __future__ import annotations

import io
import logging
import tracemalloc
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image
from pydicom.pixels import convert_color_space
from pydicom.uid import JPEGBaseline8Bit, JPEGLSLossless

from service.errors import BadImageError, PayloadTooLargeError, UnsupportedMediaTypeError
from service.imaging.pixels import decode_budget_bytes, decoded_bytes
from service.imaging.preprocessing import PreprocessConfig, decode_image, preprocess
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


# ------------------------------------------------------------------ colour, bit depth and the decode budget


def reencode(data: bytes, **attributes: object) -> bytes:
    """``data`` (from ``make_dicom``) with its image attributes replaced: colour and 32-bit images."""
    from pydicom import dcmread

    ds = dcmread(io.BytesIO(data))
    for name, value in attributes.items():
        setattr(ds, name, value)
    for name in ("RescaleSlope", "RescaleIntercept"):
        if ds.SamplesPerPixel > 1 and name in ds:
            delattr(ds, name)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def colour_dicom(rows: int, cols: int, photometric: str, samples: bytes, bits: int = 8) -> bytes:
    """A native colour DICOM whose stored bytes are ``samples`` (interleaved, as the photometric says)."""
    return reencode(
        make_dicom(np.zeros((rows, cols), np.uint8), bits=8),
        SamplesPerPixel=3,
        PhotometricInterpretation=photometric,
        PlanarConfiguration=0,
        BitsAllocated=bits,
        BitsStored=bits,
        HighBit=bits - 1,
        PixelData=samples,
    )


def rle_zeros_dicom(rows: int, cols: int, samples: int, bits: int) -> bytes:
    """An RLE Lossless DICOM of black pixels: each byte plane compresses to 2 bytes per 128 pixels, so a
    4096 x 4096 RGB 32-bit image is a 3 MB file."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless

    assert rows * cols % 128 == 0
    planes = samples * bits // 8
    segment = b"\x81\x00" * (rows * cols // 128)  # PackBits: repeat the next byte 128 times
    offsets = [64 + i * len(segment) for i in range(planes)]
    header = np.array([planes, *offsets, *[0] * (15 - planes)], dtype="<u4").tobytes()
    frame = header + segment * planes
    data = make_dicom(np.zeros((rows, cols), np.uint8), bits=8)
    return reencode(
        data,
        SamplesPerPixel=samples,
        PhotometricInterpretation="RGB" if samples == 3 else "MONOCHROME2",
        PlanarConfiguration=1,  # RLE stores planes
        BitsAllocated=bits,
        BitsStored=bits,
        HighBit=bits - 1,
        PixelData=encapsulate([frame]),
        file_meta=_rle_meta(data, RLELossless),
    )


def _rle_meta(data: bytes, syntax: str) -> object:
    from pydicom import dcmread

    meta = dcmread(io.BytesIO(data)).file_meta
    meta.TransferSyntaxUID = syntax
    return meta


def decode_peak(data: bytes, **kwargs: int) -> tuple[object, int]:
    """``decode_image(data)`` (or the exception it raised) and the peak memory it allocated."""
    tracemalloc.start()
    try:
        result: object = decode_image(data, **kwargs)
    except Exception as exc:
        result = exc
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return result, peak


def test_a_small_rle_file_of_a_huge_colour_image_is_refused_from_its_header():
    """Regression: the pixel limit counted rows x columns only; this 3 MB file (4096 x 4096, RGB, 32 bits)
    passed it and decoding peaked at 1.1 GB."""
    data = rle_zeros_dicom(4096, 4096, samples=3, bits=32)
    assert len(data) < 3_500_000
    result, peak = decode_peak(data)
    assert isinstance(result, PayloadTooLargeError), result
    assert "4096x4096 pixels x 3 samples x 32 bits" in result.reason and "to decode, over the limit of" in result.reason
    assert peak < 8 * len(data)  # refused before the pixel data was decoded


def test_the_budget_fits_every_greyscale_image_within_the_pixel_limit():
    side = 512
    grey16 = make_dicom(np.random.default_rng(1).integers(0, 4096, (side, side)), bits=16)
    result, peak = decode_peak(grey16, max_pixels=side * side)
    assert isinstance(result, np.ndarray) and result.shape == (side, side, 3)
    assert peak <= decode_budget_bytes(side * side)  # the budget holds what decoding really takes
    rle_rgb8 = rle_zeros_dicom(side, side, samples=3, bits=8)
    assert decode_image(rle_rgb8, max_pixels=side * side).shape == (side, side, 3)
    with pytest.raises(PayloadTooLargeError, match="32 bits would take"):
        decode_image(rle_zeros_dicom(side, side, samples=3, bits=32), max_pixels=side * side)


def test_the_estimate_bounds_the_real_peak():
    side = 256
    rng = np.random.default_rng(2)
    cases = {
        (1, 16): make_dicom(rng.integers(0, 4096, (side, side)), bits=16, slope=2.0, window=(900.0, 300.0)),
        (3, 8): colour_dicom(side, side, "RGB", rng.integers(0, 256, (side, side, 3)).astype(np.uint8).tobytes()),
        (3, 16): colour_dicom(side, side, "RGB", rng.integers(0, 65536, (side, side, 3)).astype("<u2").tobytes(), 16),
    }
    for (samples, bits), data in cases.items():
        result, peak = decode_peak(data, max_pixels=100 * side * side)
        assert isinstance(result, np.ndarray), (samples, bits, result)
        assert peak <= decoded_bytes(side, side, samples, bits), (samples, bits, peak)


def test_ybr_full_is_converted_to_rgb_once():
    """Regression: pydicom 3 returns YBR_FULL as RGB already; converting again turned grey (40, 40, 40) into
    (0, 133, 0)."""
    grey = colour_dicom(8, 8, "YBR_FULL", bytes([40, 128, 128]) * 64)  # Y = 40, no chroma: grey 40
    np.testing.assert_array_equal(decode_image(grey), np.full((8, 8, 3), 40, np.uint8))
    rgb = np.random.default_rng(3).integers(0, 256, (16, 16, 3)).astype(np.uint8)
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    decoded = decode_image(colour_dicom(16, 16, "YBR_FULL", ybr.tobytes()))
    assert np.abs(decoded.astype(int) - rgb).max() <= 2  # two roundings to 8 bits


def test_ybr_full_422_is_converted_to_rgb_once():
    """Native YBR_FULL_422 stores Y0 Y1 Cb Cr for each pair of pixels; pairs of one colour decode exactly."""
    colour = np.array([[[200, 30, 60]]], np.uint8)
    y, cb, cr = convert_color_space(colour, "RGB", "YBR_FULL")[0, 0]
    data = colour_dicom(8, 8, "YBR_FULL_422", bytes([y, y, cb, cr]) * 32)
    decoded = decode_image(data)
    assert np.abs(decoded.astype(int) - colour).max() <= 2, decoded[0, 0]
    grey = colour_dicom(8, 8, "YBR_FULL_422", bytes([40, 40, 128, 128]) * 32)
    np.testing.assert_array_equal(decode_image(grey), np.full((8, 8, 3), 40, np.uint8))


# ------------------------------------------------------------------------ no tag value in warnings or logs


def padded_dicom(gray: np.ndarray, padding: int) -> bytes:
    """A valid slice whose pixel data carries ``padding`` bytes too many: pydicom warns, quoting the length."""
    from pydicom import dcmread

    ds = dcmread(io.BytesIO(make_dicom(gray, bits=8)))
    ds.PixelData = ds.PixelData + b"\0" * padding
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def test_concurrent_decodes_put_no_tag_value_in_warnings_or_logs(gray, caplog):
    """Regression: the filter that silences pydicom was set once, and any ``warnings.catch_warnings`` scope
    (the preprocessing opened one per PNG/JPEG, from many threads) could undo it for good: pydicom's warnings
    then quoted values of the client's file on stderr."""
    from tests.reliability.payloads import dicom_with_bad_tag

    padded = padded_dicom(gray, 1234)  # pydicom: "... contains 1234 bytes of excess padding ..."
    bad_window = dicom_with_bad_tag("WindowCenter", "SECRETWIN", WindowWidth="400")
    image = png(gray)
    with warnings.catch_warnings():  # a scope opened and closed around a first decode resets the filters
        decode_image(padded)
    caplog.set_level(logging.DEBUG)
    logging.getLogger("pydicom").addHandler(caplog.handler)  # also what pydicom logs without propagating
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")

            def work(i: int) -> None:
                for data in (padded, image, bad_window, padded):
                    try:
                        decode_image(data)
                    except BadImageError:
                        assert data is bad_window

            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(work, range(32)))
    finally:
        logging.getLogger("pydicom").removeHandler(caplog.handler)
    texts = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    assert not [t for t in texts if "1234" in t or "SECRETWIN" in t or "padding" in t], texts
