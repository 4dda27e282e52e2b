"""POST /predict: every accepted upload shape and format, and each error path."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from service.imaging.preprocessing import PreprocessConfig, preprocess
from service.labels import CLASSES
from tests.service import images
from tests.service.conftest import IMAGE_SIZE, MODEL_NAME, make_settings

CONFIG = PreprocessConfig(image_size=IMAGE_SIZE)


def _check_prediction(prediction: dict, reference: np.ndarray) -> None:
    probs = prediction["probabilities"]
    assert list(probs) == list(CLASSES)
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
    assert np.allclose([probs[c] for c in CLASSES], reference, atol=1e-5)
    assert prediction["label"] == CLASSES[int(np.argmax(reference))]
    assert prediction["confidence"] == pytest.approx(float(np.max(reference)), abs=1e-6)


def test_single_file_upload(client, expected):
    data = images.jpeg(1)
    response = client.post("/predict", files={"file": ("scan.jpg", data, "image/jpeg")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == MODEL_NAME
    assert body["model_version"] == 1
    assert len(body["predictions"]) == 1
    _check_prediction(body["predictions"][0], expected(images.reference_input(data, IMAGE_SIZE)[None])[0])


def test_several_files_answer_in_upload_order(client, expected):
    blobs = [images.jpeg(seed) for seed in (10, 11, 12)]
    files = [("files", (f"{i}.jpg", blob, "image/jpeg")) for i, blob in enumerate(blobs)]
    response = client.post("/predict", files=files)
    assert response.status_code == 200, response.text
    reference = expected(np.stack([images.reference_input(b, IMAGE_SIZE) for b in blobs]))
    predictions = response.json()["predictions"]
    assert len(predictions) == 3
    for prediction, ref in zip(predictions, reference, strict=True):
        _check_prediction(prediction, ref)


def test_raw_image_body(client, expected):
    data = images.jpeg(2)
    response = client.post("/predict", content=data, headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 200
    _check_prediction(response.json()["predictions"][0], expected(images.reference_input(data, IMAGE_SIZE)[None])[0])


@pytest.mark.parametrize("variant", ["rgb", "gray8", "gray16", "rgba", "palette"])
def test_png_modes(client, expected, variant):
    data = images.png_variants()[variant]
    response = client.post("/predict", files={"file": ("x.png", data, "image/png")})
    assert response.status_code == 200, response.text
    _check_prediction(response.json()["predictions"][0], expected(preprocess(data, CONFIG)[None])[0])


def test_dicom(client, expected):
    data = images.dicom()
    response = client.post("/predict", files={"file": ("x.dcm", data, "application/dicom")})
    assert response.status_code == 200, response.text
    _check_prediction(response.json()["predictions"][0], expected(preprocess(data, CONFIG)[None])[0])


def test_format_comes_from_the_bytes_not_the_name_or_type(client, expected):
    data = images.encode(images.mri_slice(4), "PNG")
    response = client.post("/predict", files={"file": ("scan.jpg", data, "image/jpeg")})
    assert response.status_code == 200
    _check_prediction(response.json()["predictions"][0], expected(images.reference_input(data, IMAGE_SIZE)[None])[0])


@pytest.mark.parametrize(
    ("payload", "status", "error"),
    [
        (b"", 400, "empty image"),
        (images.jpeg(1)[:300], 400, "could not decode the JPEG image (corrupt or truncated)"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, 400, "could not decode the PNG image (corrupt or truncated)"),
        (b"hello, not an image", 415, "not a JPEG, PNG or DICOM image"),
        (b"GIF89a" + b"\x00" * 40, 415, "unsupported image format GIF; send JPEG, PNG or DICOM"),
    ],
)
def test_bad_images(client, payload, status, error):
    response = client.post("/predict", files={"file": ("x", payload, "image/jpeg")})
    assert response.status_code == status
    assert response.json() == {"error": error}


def test_bad_image_among_several_fails_the_request_and_service_keeps_serving(client):
    files = [("files", ("a.jpg", images.jpeg(1), "image/jpeg")), ("files", ("b.jpg", b"junk", "image/jpeg"))]
    assert client.post("/predict", files=files).status_code == 415
    assert client.post("/predict", files={"file": ("a.jpg", images.jpeg(1), "image/jpeg")}).status_code == 200


def test_missing_file_field(client):
    response = client.post("/predict", files={"image": ("x.jpg", images.jpeg(1), "image/jpeg")})
    assert response.status_code == 422
    assert response.json() == {"error": "no image: send it in the form field 'file' (or 'files' for several)"}


def test_unsupported_content_type(client):
    response = client.post("/predict", content=b"a,b\n1,2\n", headers={"Content-Type": "text/csv"})
    assert response.status_code == 415
    assert response.json()["error"].startswith("unsupported content type text/csv")


def test_malformed_multipart(client):
    body = b'--XyZ\r\nContent-Disposition: form-data; name="file"\r\n\r\nabc'  # never closed
    response = client.post("/predict", content=body, headers={"Content-Type": "multipart/form-data; boundary=XyZ"})
    assert response.status_code == 400
    assert response.json() == {"error": "malformed multipart body (truncated)"}


def test_not_acceptable(client):
    response = client.post(
        "/predict", files={"file": ("x.jpg", images.jpeg(1), "image/jpeg")}, headers={"Accept": "text/html"}
    )
    assert response.status_code == 406
    assert response.json() == {"error": "this endpoint answers application/json only"}


def test_body_over_the_limit(open_client, model_root, tf_classifier):
    client = open_client(make_settings(model_root, max_body_bytes=4096), tf_classifier)
    big = images.encode(images.mri_slice(1, size=256), "PNG")
    assert len(big) > 4096
    response = client.post("/predict", files={"file": ("x.png", big, "image/png")})
    assert response.status_code == 413
    assert response.json() == {"error": "request body over the limit of 4096 bytes"}


def test_image_over_the_pixel_limit(open_client, model_root, tf_classifier):
    client = open_client(make_settings(model_root, max_pixels=64 * 64), tf_classifier)
    response = client.post("/predict", files={"file": ("x.jpg", images.jpeg(1, size=96), "image/jpeg")})
    assert response.status_code == 413
    assert response.json() == {"error": "image has 96x96 pixels, over the limit of 4096"}


def test_too_many_images(client):
    files = [("files", (f"{i}.jpg", images.jpeg(1), "image/jpeg")) for i in range(9)]
    response = client.post("/predict", files=files)
    assert response.status_code == 413
    assert response.json() == {"error": "9 images in one request; the limit is 8"}


def test_uploads_never_touch_the_disk_nor_the_log(client, monkeypatch, caplog):
    import tempfile

    import starlette.formparsers

    def refuse(*args, **kwargs):
        raise AssertionError("an upload was about to be written to a temporary file")

    for name in ("SpooledTemporaryFile", "TemporaryFile", "NamedTemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, refuse)
    monkeypatch.setattr(starlette.formparsers, "SpooledTemporaryFile", refuse)
    noise = np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    big = images.encode(noise, "PNG")  # > 1 MB: Starlette's form parser would spool it to a temporary file
    assert len(big) > 1024 * 1024
    with caplog.at_level(logging.DEBUG):
        response = client.post("/predict", files={"file": ("patient-jane-doe.png", big, "image/png")})
    assert response.status_code == 200
    assert "jane-doe" not in caplog.text
