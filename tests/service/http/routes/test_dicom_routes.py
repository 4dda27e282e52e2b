"""DICOM through the routes: /predict, /invocations (application/dicom) and /explain answer exactly as for the
same pixels sent as PNG, and no DICOM tag (patient name, ID) appears in an answer or in the logs."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from tests.service import images
from tests.service.imaging.test_dicom import make_dicom
from tests.synthetic import mri_like

PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "MRN-0042"  # what make_dicom writes as PatientID
TAGS = ("Doe", "Jane", PATIENT_ID)


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return mri_like(0, np.random.default_rng(11), 64)[:, :, 0]


@pytest.fixture(scope="module")
def dicom_bytes(pixels) -> bytes:
    data = make_dicom(pixels, bits=8, patient=PATIENT_NAME)
    assert PATIENT_NAME.encode() in data and PATIENT_ID.encode() in data
    return data


@pytest.fixture(scope="module")
def png_bytes(pixels) -> bytes:
    return images.encode(pixels, "PNG")


def _no_tags(text: str) -> None:
    for tag in TAGS:
        assert tag not in text


def test_predict_dicom_equals_png(client, dicom_bytes, png_bytes, caplog):
    caplog.set_level(logging.DEBUG)
    from_dicom = client.post("/predict", files={"file": ("scan.dcm", dicom_bytes, "application/dicom")})
    raw = client.post("/predict", content=dicom_bytes, headers={"Content-Type": "application/dicom"})
    from_png = client.post("/predict", files={"file": ("scan.png", png_bytes, "image/png")})
    assert from_dicom.status_code == raw.status_code == from_png.status_code == 200, from_dicom.text
    assert from_dicom.json() == raw.json() == from_png.json()
    _no_tags(from_dicom.text)
    _no_tags(caplog.text)


def test_invocations_dicom_equals_png(client, dicom_bytes, png_bytes, caplog):
    caplog.set_level(logging.DEBUG)
    from_dicom = client.post("/invocations", content=dicom_bytes, headers={"Content-Type": "application/dicom"})
    from_png = client.post("/invocations", content=png_bytes, headers={"Content-Type": "image/png"})
    assert from_dicom.status_code == 200, from_dicom.text
    assert from_dicom.json() == from_png.json()
    assert len(from_dicom.json()["predictions"][0]) == 4
    _no_tags(from_dicom.text)
    _no_tags(caplog.text)


def test_explain_dicom_equals_png(client, dicom_bytes, png_bytes, caplog):
    caplog.set_level(logging.DEBUG)
    from_dicom = client.post("/explain?heatmap=true", files={"file": ("scan.dcm", dicom_bytes, "application/dicom")})
    from_png = client.post("/explain?heatmap=true", files={"file": ("scan.png", png_bytes, "image/png")})
    assert from_dicom.status_code == 200, from_dicom.text
    assert from_dicom.json() == from_png.json()  # same probabilities, heatmap, overlay and model input
    _no_tags(from_dicom.text)
    _no_tags(caplog.text)


def test_multi_frame_dicom_is_a_clear_4xx(client, pixels):
    data = make_dicom(np.stack([pixels, pixels]), bits=8, frames=2)
    for route in ("/predict", "/explain"):
        response = client.post(route, files={"file": ("scan.dcm", data, "application/dicom")})
        assert 400 <= response.status_code < 500
        assert "frame" in response.json()["error"]
        _no_tags(response.text)
