"""Images are patient data: a run with a file named after a patient and DICOMs carrying patient tags leaves
no file name, no tag value and no image bytes in the logs (all of them, at DEBUG), warnings, metrics or
answers, in process and from a real server's stderr."""

from __future__ import annotations

import base64
import logging
import warnings
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.reliability import payloads, routes
from tests.reliability.server import ServerProcess
from tests.service.conftest import MODEL_NAME

FILENAME = "Doe_Jane_MRN12345.jpg"
SECRETS = ["Doe_Jane", "Doe^Jane", "Jane", "MRN12345", "SECRETDB", "SECRETWIN", "SECRETNUM", "St Elsewhere"]


def patient_dicom() -> bytes:
    """A valid slice with patient name, ID, birth date (invalid, so that pydicom would quote it) and institution."""
    import io

    import pydicom

    ds = pydicom.dcmread(io.BytesIO(payloads.dicom_image(patient_name="Doe^Jane", patient_id="MRN12345")))
    ds.InstitutionName = "St Elsewhere"
    ds.PatientBirthDate = "98765432"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    assert buf.getvalue().count(b"98765432") == 1
    return buf.getvalue().replace(b"98765432", b"SECRETDB")


def patient_dicom_bad_tag(name: str, value: str, **valid: str) -> bytes:
    """The same patient, with a tag that does not hold what its VR allows (pydicom would quote it: a 400)."""
    return payloads.dicom_with_bad_tag(name, value, PatientName="Doe^Jane", PatientID="MRN12345", **valid)


def image_fragments(data: bytes) -> list[str]:
    """How image bytes would look in a log: hex, base64 (aligned) and latin-1 text of a middle slice."""
    middle = (len(data) // 2) // 3 * 3
    chunk = data[middle : middle + 24]
    return [chunk.hex(), base64.b64encode(chunk).decode(), repr(chunk)[2:-1]]


def requests_with_patient_data() -> list[tuple[str, str, dict[str, Any], int]]:
    """(method, path, request arguments, expected status): good and bad, every inference route of the service's
    list (a DICOM with patient tags, and one whose tag pydicom would quote in its error), then cases per route."""
    jpeg, dicom = payloads.good_jpeg(), patient_dicom()
    bad_window = patient_dicom_bad_tag("WindowCenter", "SECRETWIN", WindowWidth="400")
    bad_frames = patient_dicom_bad_tag("NumberOfFrames", "SECRETNUM")
    truncated = dicom[: len(dicom) // 2]
    every_route = [
        (*routes.file_request(route, data, "Doe_Jane_MRN12345.dcm", "application/dicom"), status)
        for route in routes.INFERENCE
        for data, status in ((dicom, 200), (bad_window, 400))
    ]
    return [
        *every_route,
        ("POST", "/predict", {"files": {"file": (FILENAME, jpeg, "image/jpeg")}}, 200),
        ("POST", "/predict", {"files": {"file": ("Doe_Jane_MRN12345.dcm", dicom, "application/dicom")}}, 200),
        ("POST", "/predict", {"files": {"file": ("Doe_Jane_MRN12345.png", b"Doe^Jane MRN12345", "image/png")}}, 415),
        ("POST", "/predict", {"files": {"file": ("Doe_Jane_MRN12345.dcm", truncated, "application/dicom")}}, 400),
        ("POST", "/predict", {"files": {"file": ("Doe_Jane_MRN12345.dcm", bad_window, "application/dicom")}}, 400),
        ("POST", "/invocations", {"content": dicom, "headers": {"Content-Type": "application/dicom"}}, 200),
        ("POST", "/invocations", {"content": truncated, "headers": {"Content-Type": "application/dicom"}}, 400),
        ("POST", "/invocations", {"content": bad_frames, "headers": {"Content-Type": "application/dicom"}}, 400),
        ("POST", f"/v1/models/{MODEL_NAME}:predict", {"json": {"instances": [{"b64": _b64(dicom)}]}}, 200),
        ("POST", f"/v1/models/{MODEL_NAME}:predict", {"json": {"instances": [{"b64": _b64(bad_window)}]}}, 400),
    ]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def assert_private(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} in {where}"
    for data in (payloads.good_jpeg(), patient_dicom()):
        for fragment in image_fragments(data):
            assert fragment not in text, f"image bytes in {where}"


def run_requests(send: Callable[..., Any]) -> str:
    """Send every request; return the answers' bodies and headers as one text."""
    answers = []
    for method, path, kwargs, status in requests_with_patient_data():
        response = send(method, path, **kwargs)
        assert response.status_code == status, (path, response.text)
        answers.append(f"{response.headers}\n{response.text}")
    return "\n".join(answers)


def test_no_patient_data_in_logs_warnings_metrics_or_answers(
    corpus_client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, at its most talkative
    for name in ("service", "uvicorn", "python_multipart", "PIL", "httpx"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        answers = run_requests(corpus_client.request)
    assert caplog.records, "nothing was logged: the test would prove nothing"
    assert_private(caplog.text, "the log")
    assert_private("\n".join(str(w.message) for w in caught), "a warning")
    assert_private(answers, "an answer")
    assert_private(corpus_client.get("/metrics").text, "the metrics")


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_no_patient_data_in_a_real_servers_output(live_server: ServerProcess) -> None:
    """The server's stdout and stderr (debug log, access log, warnings) after the same requests."""
    with httpx.Client(base_url=live_server.url, timeout=60) as client:
        answers = run_requests(client.request)
        metrics = client.get("/metrics").text
    log = live_server.log()
    assert "uvicorn.access" in log and "POST /predict" in log  # MRI_LOG_LEVEL=debug, access log on
    assert_private(log, "the server's output")
    assert_private(answers, "an answer")
    assert_private(metrics, "the metrics")
