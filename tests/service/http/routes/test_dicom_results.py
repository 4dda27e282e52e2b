"""DICOM results (``?output=dicom`` / ``Accept: multipart/related; type="application/dicom"``) from the real app
with the tiny model: every object passes dciodvfy (Debian's dicom3tools) without an error, sits in the input's
study in a new series with new UIDs, references the input, carries the same numbers as the JSON answer, and
copies only the patient/study attributes DICOM requires (nothing else of the input, nothing in the logs)."""

from __future__ import annotations

import io
import json
import logging
import shutil
import subprocess
from collections.abc import Iterator
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import ComprehensiveSRStorage, SecondaryCaptureImageStorage, generate_uid

from service.checks import input_check
from service.inference.classifier import Classifier
from service.labels import CLASSES
from service.protocols.dicom_results import CODING_SCHEME, COPIED_ATTRIBUTES, DISCLAIMER, REASON_CODES
from tests.service import images
from tests.service.conftest import DATA_FINGERPRINT, MODEL_NAME, make_settings
from tests.synthetic import mri_like

DCIODVFY = shutil.which("dciodvfy")
MISSING_DCIODVFY = (
    "dciodvfy is not installed: the DICOM results tests need Debian's dicom3tools (apt-get install dicom3tools), "
    "which CI installs; they are never skipped."
)
DICOM_ACCEPT = 'multipart/related; type="application/dicom"'
STUDY_UID = generate_uid()
SERIES_UID = generate_uid()
#: Attributes of the inputs that no result may carry (their values must appear nowhere in an answer).
NOT_COPIED = {
    "InstitutionName": "St-Elsewhere-Hospital",
    "OperatorsName": "Tech^Terry",
    "SeriesDescription": "t1-secret-protocol",
    "StationName": "SCANNER-7",
    "OtherPatientIDs": "OTHER-ID-99",
    "PatientAddress": "1 Privet Drive",
    "Manufacturer": "ScannerCo",
}
FULL = {
    "StudyInstanceUID": STUDY_UID,
    "SeriesInstanceUID": SERIES_UID,
    "StudyDate": "20260315",
    "StudyTime": "101500",
    "AccessionNumber": "ACC-7731",
    "StudyID": "S-42",
    "ReferringPhysicianName": "Refer^Rita",
    "PatientBirthDate": "19700101",
    "PatientSex": "F",
    **NOT_COPIED,
}
#: Values that break their VR (length, format, enumeration): left empty in the results, never copied.
BROKEN = {"PatientSex": "X", "StudyDate": "not-a-date", "StudyTime": "25:99", "AccessionNumber": "A" * 40}
MINIMAL = {"StudyInstanceUID": STUDY_UID, "SeriesInstanceUID": SERIES_UID, "PatientName": None, "PatientID": None}


def _pixels(bits: int) -> np.ndarray:
    gray = mri_like(1, np.random.default_rng(5), 64)[:, :, 0].astype(np.uint16)
    return gray if bits == 8 else gray * (2 ** (bits - 8))


#: name -> DICOM input: MONOCHROME1/2, 8/12/16-bit, with and without the optional tags, non-ASCII names.
INPUTS: dict[str, Any] = {
    "mono2-8bit-all-tags": lambda: images.make_dicom(_pixels(8), bits=8, tags=FULL),
    "mono1-12bit-minimal": lambda: images.make_dicom(_pixels(12), bits=12, photometric="MONOCHROME1", tags=MINIMAL),
    "mono2-16bit-utf8-window": lambda: images.make_dicom(
        _pixels(16),
        bits=16,
        slope=2.0,
        intercept=-100.0,
        window=(30000.0, 60000.0),
        patient="Müller^Jürgen",
        tags={**FULL, "SpecificCharacterSet": "ISO_IR 192"},
    ),
    "mono2-8bit-broken-values": lambda: images.make_dicom(
        _pixels(8), bits=8, patient="x" * 70, tags={**FULL, **BROKEN}
    ),
}


@pytest.fixture(scope="module")
def dciodvfy() -> str:
    if DCIODVFY is None:
        pytest.fail(MISSING_DCIODVFY, pytrace=False)
    return DCIODVFY


def parts_of(response: Any) -> list[bytes]:
    """The bodies of a ``multipart/related`` answer, each checked to be ``application/dicom``."""
    assert response.status_code == 200, response.text
    ctype = response.headers["content-type"]
    assert ctype.startswith(DICOM_ACCEPT + "; boundary=")
    assert response.headers["cache-control"] == "no-store"
    message = BytesParser().parsebytes(f"Content-Type: {ctype}\r\n\r\n".encode() + response.content)
    assert message.is_multipart()
    parts = []
    for part in message.get_payload():
        assert part.get_content_type() == "application/dicom"
        parts.append(part.get_payload(decode=True))
    return parts


def validate(dciodvfy: str, data: bytes, path: Path) -> list[str]:
    """dciodvfy's output lines for one object (written to the test's folder only to be validated): it must exit 0
    and report no error (``Error - ...``, or ``(gggg,eeee) ... - Error - ...`` for an element it could not read)
    and no ``Abort`` (a file it could not read)."""
    path.write_bytes(data)
    command = [dciodvfy, str(path)]
    result = subprocess.run(command, capture_output=True, text=True, errors="replace", timeout=60, check=False)
    lines = (result.stdout + result.stderr).splitlines()
    errors = [line for line in lines if line.startswith(("Error", "Abort")) or " - Error - " in line]
    assert result.returncode == 0 and not errors, f"{path.name} (exit {result.returncode}):\n" + "\n".join(lines)
    return lines


def content_items(dataset: Any) -> Iterator[Any]:
    for item in getattr(dataset, "ContentSequence", []):
        yield item
        yield from content_items(item)


def by_code(dataset: Any, value: str) -> Any:
    found = [item for item in content_items(dataset) if item.ConceptNameCodeSequence[0].CodeValue == value]
    assert len(found) == 1, value
    return found[0]


def test_explain_answers_a_valid_sr_and_secondary_capture(client, dciodvfy, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    for name, make in INPUTS.items():
        data = make()
        source = pydicom.dcmread(io.BytesIO(data))
        form = {"file": ("scan.dcm", data, "application/dicom")}
        answer = client.post("/explain", files=form).json()
        report_bytes, capture_bytes = parts_of(client.post("/explain?output=dicom", files=form))
        validate(dciodvfy, report_bytes, tmp_path / f"{name}-sr.dcm")
        validate(dciodvfy, capture_bytes, tmp_path / f"{name}-sc.dcm")
        report, capture = pydicom.dcmread(io.BytesIO(report_bytes)), pydicom.dcmread(io.BytesIO(capture_bytes))

        assert report.SOPClassUID == ComprehensiveSRStorage and capture.SOPClassUID == SecondaryCaptureImageStorage
        for result in (report, capture):  # same study, a new series and instance of its own
            assert result.StudyInstanceUID == STUDY_UID
            assert result.SeriesInstanceUID != SERIES_UID and result.SOPInstanceUID != source.SOPInstanceUID
            assert result.file_meta.MediaStorageSOPInstanceUID == result.SOPInstanceUID
            _copied_only(source, result, report_bytes if result is report else capture_bytes)
        assert report.SeriesInstanceUID != capture.SeriesInstanceUID
        assert (report.Modality, capture.Modality) == ("SR", "OT")

        # the SR references the source image (evidence and the measurement group's source) and holds the answer
        evidence = report.CurrentRequestedProcedureEvidenceSequence[0]
        assert evidence.StudyInstanceUID == STUDY_UID
        assert evidence.ReferencedSeriesSequence[0].SeriesInstanceUID == SERIES_UID
        referenced = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
        assert (referenced.ReferencedSOPClassUID, referenced.ReferencedSOPInstanceUID) == (
            source.SOPClassUID,
            source.SOPInstanceUID,
        )
        assert report.ContentTemplateSequence[0].TemplateIdentifier == "1500"
        assert report.VerificationFlag == "UNVERIFIED" and report.CompletionFlag == "COMPLETE"
        prediction = answer["prediction"]
        for cls in CLASSES:
            item = by_code(report, f"p_{cls}")
            value = float(item.MeasuredValueSequence[0].NumericValue)
            assert value == pytest.approx(prediction["probabilities"][cls], abs=1e-6)
        predicted = by_code(report, "predicted_class").ConceptCodeSequence[0]
        assert (predicted.CodeValue, predicted.CodingSchemeDesignator) == (prediction["label"], CODING_SCHEME)
        warning = by_code(report, "input_warning").ConceptCodeSequence[0].CodeMeaning
        assert warning == ("Yes" if prediction["check"]["warning"] else "No")
        explained = by_code(report, "explained_class").ConceptCodeSequence[0].CodeValue
        assert explained == answer["explanation"]["class_name"]
        assert by_code(report, "111001").TextValue == MODEL_NAME  # Algorithm Name
        assert by_code(report, "111003").TextValue == str(answer["model_version"])  # Algorithm Version
        assert DATA_FINGERPRINT in by_code(report, "111002").TextValue  # Algorithm Parameters
        assert by_code(report, "121106").TextValue == DISCLAIMER
        assert report.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == CODING_SCHEME

        # the Secondary Capture: derived, not for diagnosis, the JSON answer's overlay pixel for pixel
        assert list(capture.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert "NOT FOR DIAGNOSIS" in capture.SeriesDescription and "NOT FOR DIAGNOSIS" in capture.ImageComments
        assert capture.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        overlay = np.asarray(Image.open(io.BytesIO(_b64(answer["explanation"]["overlay_png"]))).convert("RGB"))
        np.testing.assert_array_equal(capture.pixel_array, overlay)
    for tag in ("Doe", "Müller", "MRN-0042", "ACC-7731", STUDY_UID, *NOT_COPIED.values()):
        assert tag not in caplog.text


def _b64(text: str) -> bytes:
    import base64

    return base64.b64decode(text)


def _copied_only(source: Any, result: Any, raw: bytes) -> None:
    """Patient/study attributes equal the input's valid values (else are empty); nothing else is copied."""
    for keyword in COPIED_ATTRIBUTES:
        if keyword == "SpecificCharacterSet":
            continue
        value = str(source.get(keyword, "") or "")
        broken = value == BROKEN.get(keyword) or (keyword == "PatientName" and len(value) > 64)
        assert str(result.get(keyword, "") or "") == ("" if broken else value), keyword
    if "SpecificCharacterSet" in source:
        assert result.SpecificCharacterSet == source.SpecificCharacterSet
    for keyword, value in NOT_COPIED.items():
        assert value.encode() not in raw, keyword
    assert result.Manufacturer != "ScannerCo"


def test_predict_answers_one_report_per_image_in_one_series(client, dciodvfy, tmp_path):
    first, second = (images.make_dicom(_pixels(8), bits=8, tags=FULL) for _ in range(2))
    files = [("files", ("a.dcm", first, "application/dicom")), ("files", ("b.dcm", second, "application/dicom"))]
    json_answer = client.post("/predict", files=files).json()
    parts = parts_of(client.post("/predict", files=files, headers={"Accept": DICOM_ACCEPT}))
    assert len(parts) == 2
    reports = [pydicom.dcmread(io.BytesIO(part)) for part in parts]
    for index, (part, report) in enumerate(zip(parts, reports, strict=True)):
        validate(dciodvfy, part, tmp_path / f"predict-{index}.dcm")
        assert report.SOPClassUID == ComprehensiveSRStorage and report.InstanceNumber == index + 1
        source = pydicom.dcmread(io.BytesIO((first, second)[index]))
        evidence = report.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
        assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        label = json_answer["predictions"][index]["label"]
        assert by_code(report, "predicted_class").ConceptCodeSequence[0].CodeValue == label
    assert reports[0].SeriesInstanceUID == reports[1].SeriesInstanceUID != SERIES_UID
    assert reports[0].SOPInstanceUID != reports[1].SOPInstanceUID


def test_json_stays_the_default(client):
    data = images.make_dicom(_pixels(8), bits=8, tags=FULL)
    for accept in (None, "*/*", "application/json", f"application/json, {DICOM_ACCEPT};q=0.5"):
        headers = {"Accept": accept} if accept else {}
        response = client.post("/predict", files={"file": ("a.dcm", data, "application/dicom")}, headers=headers)
        assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    response = client.post("/predict?output=json", files={"file": ("a.dcm", data, "application/dicom")})
    assert response.headers["content-type"] == "application/json"


def test_non_dicom_input_is_a_415_before_the_model_runs(client):
    jpeg = images.jpeg(3)
    dicom = images.make_dicom(_pixels(8), bits=8, tags=FULL)
    for route in ("/predict", "/explain"):
        response = client.post(f"{route}?output=dicom", files={"file": ("a.jpg", jpeg, "image/jpeg")})
        assert response.status_code == 415
        assert "DICOM results need a DICOM input" in response.json()["error"]
    mixed = [("files", ("a.dcm", dicom, "application/dicom")), ("files", ("b.jpg", jpeg, "image/jpeg"))]
    assert client.post("/predict", files=mixed, headers={"Accept": DICOM_ACCEPT}).status_code == 415


def test_input_without_study_uids_is_a_clear_422(client, caplog):
    caplog.set_level(logging.DEBUG)
    data = images.make_dicom(_pixels(8), bits=8)  # no Study/Series Instance UID
    response = client.post("/explain?output=dicom", files={"file": ("a.dcm", data, "application/dicom")})
    assert response.status_code == 422
    assert "StudyInstanceUID" in response.json()["error"]
    assert "Doe" not in response.text and "Doe" not in caplog.text


def input_check_of(report: Any) -> dict[str, Any]:
    """The input check as the SR holds it, read back with highdicom: its Yes/No answers and its reasons (each a
    code of the private scheme: (value, meaning), in order)."""
    from highdicom.sr import CodedConcept

    def concept(item: Any) -> CodedConcept:
        return CodedConcept.from_dataset(item.ConceptCodeSequence[0])

    found: dict[str, Any] = {"reasons": []}
    for item in content_items(report):
        name = item.ConceptNameCodeSequence[0].CodeValue
        if name in ("input_warning", "likely_mri", "confident", "familiar"):
            found[name] = concept(item).meaning == "Yes"
        elif name == "input_reason":
            value = concept(item)
            assert value.scheme_designator == CODING_SCHEME
            found["reasons"].append((value.value, value.meaning))
    return found


def test_every_reason_the_input_check_can_give_has_a_code() -> None:
    assert set(REASON_CODES) == set(input_check.MESSAGES)
    codes = [code for code, _ in REASON_CODES.values()]
    assert len(set(codes)) == len(codes)
    assert all(len(code) <= 16 for code in codes), "a Code Value is an SH"
    assert all(len(meaning) <= 64 for _, meaning in REASON_CODES.values()), "a Code Meaning is an LO"


ALL_FAIL = {"max_colour_spread": -1.0, "max_border_brightness": -1.0, "min_confidence": 1.01, "max_ood_score": -1.0}
ONLY_UNFAMILIAR = {"max_colour_spread": 1.0, "max_border_brightness": 1.0, "min_confidence": 0.0, "max_ood_score": -1.0}


@pytest.mark.parametrize(
    ("thresholds", "reasons"),
    [
        (ALL_FAIL, ["colour_image", "bright_background", "low_confidence", "unlike_training"]),
        (ONLY_UNFAMILIAR, ["unlike_training"]),  # warning, yet likely an MRI and confident: the SR says why
    ],
    ids=["every-reason", "only-unlike-training"],
)
def test_every_reason_of_the_answer_is_in_the_sr(
    open_client, model_root, dciodvfy, tmp_path, thresholds: dict[str, float], reasons: list[str]
) -> None:
    """The tiny model with calibrated thresholds (its metadata's ``ood``) set so that these checks fail."""
    root = tmp_path / "model"
    shutil.copytree(model_root / "1", root / "1")
    meta = json.loads((root / "1" / "metadata.json").read_text())
    (root / "1" / "metadata.json").write_text(json.dumps({**meta, "ood": thresholds}))
    classifier = Classifier(make_settings(root))
    assert classifier.load(), classifier.reason
    client = open_client(make_settings(root), classifier)
    form = {"file": ("scan.dcm", images.make_dicom(_pixels(8), bits=8, tags=FULL), "application/dicom")}
    check = client.post("/predict", files=form).json()["predictions"][0]["check"]
    assert check["reasons"] == reasons, "the thresholds make exactly these checks fail"
    for route in ("/predict", "/explain"):
        report_bytes = parts_of(client.post(f"{route}?output=dicom", files=form))[0]
        validate(dciodvfy, report_bytes, tmp_path / f"{route[1:]}-sr.dcm")
        in_sr = input_check_of(pydicom.dcmread(io.BytesIO(report_bytes)))
        assert in_sr["reasons"] == [REASON_CODES[reason] for reason in check["reasons"]], "every reason, in order"
        for answer in ("likely_mri", "confident", "familiar"):
            assert in_sr[answer] is check[answer], answer
        assert in_sr["input_warning"] is check["warning"] is True
