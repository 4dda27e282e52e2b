"""The node against a real PACS: Orthanc sends it an MR series (C-STORE through Orthanc's REST API), the node
sends its results back by C-STORE or by STOW-RS, and they are found in the source study in Orthanc: one SR per
slice with the probabilities ``/predict`` gives for the same pixels, the Grad-CAM Secondary Captures when asked,
and one summary SR per series, every object dciodvfy-clean and without any PHI in the log."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import ComprehensiveSRStorage, MRImageStorage, SecondaryCaptureImageStorage

from service.labels import CLASSES
from service.protocols.dicom_results import DISCLAIMER, SC_SERIES_NUMBER, SR_SERIES_NUMBER, SUMMARY_SERIES_NUMBER
from tests.dicom_node.conftest import NODE_AET, PACS_AET, PATIENT, Orthanc, mr_series, sample, wait_for
from tests.service.http.routes.test_dicom_results import by_code, content_items, dciodvfy, validate

__all__ = ["dciodvfy"]
pytestmark = pytest.mark.slow


def send_series(pacs: Orthanc, node: Any, slices: list[bytes]) -> None:
    """Upload ``slices`` to Orthanc, then have Orthanc C-STORE their series to the node."""
    series = {pacs.upload(data)["ParentSeries"] for data in slices}
    pacs.add_modality("node", NODE_AET, node.scp.address[1])
    answer = pacs.rest.post("/modalities/node/store", json={"Resources": sorted(series), "Synchronous": True})
    assert answer.status_code == 200, answer.text


def results(pacs: Orthanc, study_uid: str) -> dict[str, list[Any]]:
    """The study's objects in Orthanc by kind: mr, sr (one per slice), sc, summary."""
    found: dict[str, list[Any]] = {"mr": [], "sr": [], "sc": [], "summary": []}
    for data in pacs.study_objects(study_uid):
        ds = pydicom.dcmread(io.BytesIO(data))
        ds.raw = data
        if ds.SOPClassUID == MRImageStorage:
            found["mr"].append(ds)
        elif ds.SOPClassUID == SecondaryCaptureImageStorage:
            found["sc"].append(ds)
        elif ds.SOPClassUID == ComprehensiveSRStorage:
            found["summary" if ds.SeriesNumber == SUMMARY_SERIES_NUMBER else "sr"].append(ds)
    return found


def predicted(client: Any, slices: list[bytes]) -> dict[str, dict[str, Any]]:
    """``/predict``'s answer for each slice, by SOP Instance UID."""
    answers = {}
    for data in slices:
        answer = client.post("/predict", files={"file": ("a.dcm", data, "application/dicom")})
        assert answer.status_code == 200, answer.text
        uid = str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)
        answers[uid] = answer.json()["predictions"][0]
    return answers


def source_of(report: Any) -> str:
    evidence = report.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    return str(evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)


def check_reports(reports: list[Any], expected: dict[str, dict[str, Any]], study_uid: str) -> None:
    """Each SR references one slice, sits in its study, and holds ``/predict``'s numbers for it."""
    assert sorted(source_of(r) for r in reports) == sorted(expected)
    assert len({r.SeriesInstanceUID for r in reports}) == 1, "the SRs of one series share one result series"
    assert sorted(int(r.InstanceNumber) for r in reports) == list(range(1, len(reports) + 1))
    for report in reports:
        assert report.StudyInstanceUID == study_uid and report.SeriesNumber == SR_SERIES_NUMBER
        assert (str(report.PatientName), report.PatientID) == (PATIENT["name"], PATIENT["id"])
        answer = expected[source_of(report)]
        for cls in CLASSES:
            value = float(by_code(report, f"p_{cls}").MeasuredValueSequence[0].NumericValue)
            assert value == pytest.approx(answer["probabilities"][cls], abs=1e-6)
        assert by_code(report, "predicted_class").ConceptCodeSequence[0].CodeValue == answer["label"]
        warning = by_code(report, "input_warning").ConceptCodeSequence[0].CodeMeaning
        assert warning == ("Yes" if answer["check"]["warning"] else "No")
        assert by_code(report, "121106").TextValue == DISCLAIMER


def test_series_from_orthanc_comes_back_by_c_store(
    orthanc: Orthanc, start_node: Callable[..., Any], client: Any, dciodvfy: str, tmp_path: Path, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    node = start_node(
        store_ae_title=PACS_AET,
        store_host="127.0.0.1",
        store_port=orthanc.dicom_port,
        send_secondary_capture=True,
    )
    slices = mr_series(6)
    study_uid = str(pydicom.dcmread(io.BytesIO(slices[0])).StudyInstanceUID)
    before = {
        "received": sample("mri_dicom_node_received_total", status="accepted"),
        "sent": sample("mri_dicom_node_sent_total", destination="dimse", kind="sr"),
        "sc": sample("mri_dicom_node_sent_total", destination="dimse", kind="sc"),
        "summary": sample("mri_dicom_node_sent_total", destination="dimse", kind="summary"),
    }
    send_series(orthanc, node, slices)
    expected = predicted(client, slices)
    wait_for(lambda: orthanc.count(study_uid) == 6 * 3 + 1, what="6 SRs, 6 SCs and a summary in Orthanc")

    found = results(orthanc, study_uid)
    assert len(found["mr"]) == 6 and len(found["sc"]) == 6 and len(found["summary"]) == 1
    check_reports(found["sr"], expected, study_uid)
    for ds in found["sr"] + found["sc"] + found["summary"]:
        validate(dciodvfy, ds.raw, tmp_path / f"{ds.SOPInstanceUID}.dcm")
    sources = {str(ds.SOPInstanceUID) for ds in found["mr"]}
    for capture in found["sc"]:
        assert capture.SeriesNumber == SC_SERIES_NUMBER and "NOT FOR DIAGNOSIS" in capture.ImageComments
        assert capture.SourceImageSequence[0].ReferencedSOPInstanceUID in sources
    assert sorted(int(c.InstanceNumber) for c in found["sc"]) == list(range(1, 7))
    for report in found["sr"]:  # with the overlay sent, each SR names the class its Grad-CAM explains
        explained = by_code(report, "explained_class").ConceptCodeSequence[0].CodeValue
        assert explained == expected[source_of(report)]["label"]

    summary = found["summary"][0]
    groups = [item for item in content_items(summary) if item.ConceptNameCodeSequence[0].CodeValue == "125007"]
    assert len(groups) == 6, "one measurement group per slice"
    comments = [i.TextValue for i in content_items(summary) if i.ConceptNameCodeSequence[0].CodeValue == "121106"]
    assert comments[0] == DISCLAIMER and "6 slice(s) classified" in comments[1]
    warned = sum(answer["check"]["warning"] for answer in expected.values())
    assert f"{warned} slice(s) with an input check warning" in comments[1]

    wait_for(lambda: "complete:" in caplog.text, timeout=10, what="the study's log line")
    assert sample("mri_dicom_node_received_total", status="accepted") - before["received"] == 6
    assert sample("mri_dicom_node_sent_total", destination="dimse", kind="sr") - before["sent"] == 6
    assert sample("mri_dicom_node_sent_total", destination="dimse", kind="sc") - before["sc"] == 6
    assert sample("mri_dicom_node_sent_total", destination="dimse", kind="summary") - before["summary"] == 1
    for value in (PATIENT["name"], "Doe", PATIENT["id"], study_uid, "ACC-7731", "St-Elsewhere", *sources):
        assert value not in caplog.text


def test_series_from_orthanc_comes_back_by_stow_rs(
    orthanc: Orthanc, start_node: Callable[..., Any], client: Any, dciodvfy: str, tmp_path: Path
) -> None:
    node = start_node(stow_url=orthanc.dicomweb)
    slices = mr_series(4, seed=40)
    study_uid = str(pydicom.dcmread(io.BytesIO(slices[0])).StudyInstanceUID)
    sent = sample("mri_dicom_node_sent_total", destination="stow", kind="sr")
    send_series(orthanc, node, slices)
    expected = predicted(client, slices)
    wait_for(lambda: orthanc.count(study_uid) == 4 + 4 + 1, what="4 SRs and a summary stored by STOW-RS")

    found = results(orthanc, study_uid)
    assert (len(found["mr"]), len(found["sc"]), len(found["summary"])) == (4, 0, 1)
    check_reports(found["sr"], expected, study_uid)
    for ds in found["sr"] + found["summary"]:
        validate(dciodvfy, ds.raw, tmp_path / f"{ds.SOPInstanceUID}.dcm")
    assert sample("mri_dicom_node_sent_total", destination="stow", kind="sr") - sent == 4
    assert sample("mri_dicom_node_destination_up", destination="stow") == 1
    assert node.readiness()["ready"] is True


def test_non_mr_objects_from_orthanc_are_refused(orthanc: Orthanc, start_node: Callable[..., Any]) -> None:
    """A CT image: no presentation context for it, so Orthanc's store fails and the node counts nothing."""
    node = start_node(stow_url=orthanc.dicomweb)
    ct = pydicom.dcmread(io.BytesIO(mr_series(1, seed=50)[0]))
    ct.SOPClassUID = ct.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
    ct.Modality = "CT"
    buffer = io.BytesIO()
    ct.save_as(buffer, enforce_file_format=True)
    series = orthanc.upload(buffer.getvalue())["ParentSeries"]
    orthanc.add_modality("node", NODE_AET, node.scp.address[1])
    accepted = sample("mri_dicom_node_received_total", status="accepted")
    answer = orthanc.rest.post("/modalities/node/store", json={"Resources": [series], "Synchronous": True})
    assert answer.status_code != 200
    assert sample("mri_dicom_node_received_total", status="accepted") == accepted
    assert node.pending == 0 and len(node.tracker) == 0
