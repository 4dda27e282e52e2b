"""What the node refuses, and how it says so: callers not on the allow-list, non-MR data sets, associations
and queues over their limits, a destination that is down (retried, counted, kept in the spool, delivered when
it is back; dropped and counted without a spool). Every refusal is a status or a rejection, never silence."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest

from service.dicom_node.scp import CANNOT_UNDERSTAND, OUT_OF_RESOURCES, SOP_CLASS_MISMATCH, SUCCESS
from tests.dicom_node.conftest import (
    PACS_AET,
    Orthanc,
    associate,
    mr_series,
    sample,
    store,
    study_uid_of,
    wait_for,
)
from tests.processes import free_port
from tests.service import images
from tests.service.held import Hold, held_classifier

pytestmark = pytest.mark.slow


def _with(data: bytes, **tags: Any) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_a_calling_ae_not_on_the_list_is_rejected(start_node: Callable[..., Any], orthanc: Orthanc) -> None:
    node = start_node(stow_url=orthanc.dicomweb)
    port = node.scp.address[1]
    rejected = sample("mri_dicom_node_associations_total", result="rejected")
    assoc = associate(port, aet="INTRUDER")
    assert assoc.is_rejected
    rejection = assoc.acceptor.primitive
    assert (rejection.result, rejection.result_source, rejection.diagnostic) == (0x01, 0x01, 0x03)
    wrong_called = associate(port, called="SOMEONEELSE")  # an allowed caller that calls another AE title
    assert wrong_called.is_rejected and wrong_called.acceptor.primitive.diagnostic == 0x07
    assert sample("mri_dicom_node_associations_total", result="rejected") - rejected == 2
    allowed = associate(port)
    assert allowed.is_established and allowed.send_c_echo().Status == SUCCESS
    allowed.release()


def test_data_sets_that_are_not_mr_images_get_a_status(start_node: Callable[..., Any], orthanc: Orthanc) -> None:
    node = start_node(stow_url=orthanc.dicomweb)
    mr = mr_series(1, seed=60)[0]
    ct_in_mr = _with(mr, Modality="CT")  # sent as MR Image Storage, but its data set is a CT image's
    multi_frame = images.make_dicom(
        images.mri_slice(3, size=64)[:, :, 0].repeat(2, axis=0).reshape(2, 64, 64),
        bits=8,
        frames=2,
        tags={"StudyInstanceUID": study_uid_of(mr), "SeriesInstanceUID": "1.2.3.4"},
    )
    no_study = images.make_dicom(images.mri_slice(4, size=64)[:, :, 0], bits=8)
    counts = {s: sample("mri_dicom_node_received_total", status=s) for s in ("sop_class_mismatch", "cannot_understand")}
    statuses = store(node.scp.address[1], [ct_in_mr, multi_frame, no_study, mr])
    assert statuses == [SOP_CLASS_MISMATCH, CANNOT_UNDERSTAND, CANNOT_UNDERSTAND, SUCCESS]
    assert sample("mri_dicom_node_received_total", status="sop_class_mismatch") - counts["sop_class_mismatch"] == 1
    assert sample("mri_dicom_node_received_total", status="cannot_understand") - counts["cannot_understand"] == 2


def test_an_association_over_the_instance_limit_gets_out_of_resources(
    start_node: Callable[..., Any], orthanc: Orthanc
) -> None:
    node = start_node(stow_url=orthanc.dicomweb, max_association_instances=2)
    slices = mr_series(4, seed=70)
    assert store(node.scp.address[1], slices[:3]) == [SUCCESS, SUCCESS, OUT_OF_RESOURCES]
    assert store(node.scp.address[1], slices[3:]) == [SUCCESS]  # a new association starts again
    study = study_uid_of(slices[0])
    wait_for(lambda: orthanc.count(study) == 3 + 1, what="3 SRs and the summary")


def test_a_full_queue_refuses_with_out_of_resources_then_recovers(
    start_node: Callable[..., Any], orthanc: Orthanc, tf_classifier: Any
) -> None:
    hold = Hold()
    hold.release.clear()  # the model holds its batches: received slices stay queued
    node = start_node(held_classifier(tf_classifier, hold), stow_url=orthanc.dicomweb, max_pending=2)
    slices = mr_series(3, seed=80)
    try:
        assert store(node.scp.address[1], slices) == [SUCCESS, SUCCESS, OUT_OF_RESOURCES]
        assert sample("mri_dicom_node_queue_depth") == 2
    finally:
        hold.release.set()
    wait_for(lambda: node.pending == 0, what="the queue to empty")
    assert store(node.scp.address[1], slices[2:]) == [SUCCESS]
    wait_for(lambda: orthanc.count(study_uid_of(slices[0])) == 3 + 1, what="3 SRs and the summary")


def test_a_destination_that_is_down_is_retried_then_counted_and_delivered_from_the_spool(
    start_node: Callable[..., Any], start_orthanc: Callable[..., Orthanc], tmp_path: Path
) -> None:
    port, spool = free_port(), tmp_path / "spool"
    node = start_node(
        store_ae_title=PACS_AET,
        store_host="127.0.0.1",
        store_port=port,
        delivery_attempts=3,
        spool_dir=spool,
        series_summary=False,
    )
    before = {
        name: sample(f"mri_dicom_node_{name}_total", destination="dimse") for name in ("retried", "failed", "dropped")
    }
    slices = mr_series(3, seed=90)
    assert store(node.scp.address[1], slices) == [SUCCESS] * 3
    wait_for(
        lambda: sample("mri_dicom_node_failed_total", destination="dimse") - before["failed"] == 3,
        what="3 failed deliveries",
    )
    assert sample("mri_dicom_node_retried_total", destination="dimse") - before["retried"] == 3 * 2
    assert sample("mri_dicom_node_dropped_total", destination="dimse") == before["dropped"]
    assert len(list(spool.glob("dimse/*.dcm"))) == 3
    assert node.readiness()["reasons"] == ["destination dimse not reachable"]

    pacs = start_orthanc(dicom_port=port)  # the PACS is back: the spool is delivered, then emptied
    study = study_uid_of(slices[0])
    wait_for(lambda: pacs.count(study) == 3, what="the spooled SRs in Orthanc")
    wait_for(lambda: not list(spool.glob("dimse/*")), what="an empty spool")
    assert sample("mri_dicom_node_spool_bytes") == 0
    wait_for(lambda: node.readiness()["ready"], what="readiness once the PACS answers C-ECHO")


def test_without_a_spool_a_failed_delivery_is_dropped_and_counted(
    start_node: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    node = start_node(
        store_ae_title=PACS_AET,
        store_host="127.0.0.1",
        store_port=free_port(),
        delivery_attempts=2,
        series_summary=False,
    )
    dropped = sample("mri_dicom_node_dropped_total", destination="dimse")
    assert store(node.scp.address[1], mr_series(1, seed=95)) == [SUCCESS]
    wait_for(lambda: sample("mri_dicom_node_dropped_total", destination="dimse") - dropped == 1, what="a drop")
    assert list(tmp_path.iterdir()) == [], "nothing written to disk without a spool"


def test_a_full_outbox_refuses_new_slices(start_node: Callable[..., Any]) -> None:
    node = start_node(
        store_ae_title=PACS_AET,
        store_host="127.0.0.1",
        store_port=free_port(),
        max_outbox=2,
        delivery_backoff_s=30.0,
        series_summary=False,
    )
    slices = mr_series(3, seed=97)
    assert store(node.scp.address[1], slices[:2]) == [SUCCESS, SUCCESS]
    wait_for(lambda: node.outboxes[0].depth == 2, what="2 results waiting")
    assert store(node.scp.address[1], slices[2:]) == [OUT_OF_RESOURCES]


def test_tls_on_the_dicom_port(start_node: Callable[..., Any], tmp_path: Path) -> None:
    """With a certificate the port speaks TLS only: a TLS client that trusts it echoes, a plain one cannot."""
    import ssl
    import subprocess

    cert, key = tmp_path / "node.pem", tmp_path / "node.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    node = start_node(tls_cert_file=cert, tls_key_file=key)
    port = node.scp.address[1]
    client = ssl.create_default_context(cafile=str(cert))
    secure = associate(port, tls=(client, "localhost"))
    assert secure.is_established and secure.send_c_echo().Status == SUCCESS
    secure.release()
    assert not associate(port).is_established


def test_results_spooled_by_a_previous_run_are_delivered_first(orthanc: Orthanc, tmp_path: Path) -> None:
    """A restart finds the spool's files, sends them, and deletes each once stored."""
    from service.dicom_node.delivery import Outbox, RetryPolicy, StowDestination
    from service.dicom_node.spool import Spool
    from service.protocols.dicom_results import Algorithm, read_source, structured_report
    from tests.dicom_node.test_parts import _prediction

    source = read_source(mr_series(1, seed=99)[0])
    report = structured_report(source, _prediction("glioma"), Algorithm("m", "1", None), "1.2.826.0.1.3680043.8.498.2")
    Spool(tmp_path / "spool", 1 << 20).put("stow", report)  # left by the run before
    spool = Spool(tmp_path / "spool", 1 << 20)
    sent = sample("mri_dicom_node_sent_total", destination="stow", kind="sr")
    outbox = Outbox(StowDestination(orthanc.dicomweb), RetryPolicy(), 10, spool)
    assert outbox.depth == 1 and outbox.in_memory == 0
    outbox.start()
    try:
        assert outbox.wait_empty(30)
    finally:
        outbox.stop(5)
    assert orthanc.count(str(source.dataset.StudyInstanceUID)) == 1
    assert spool.used_bytes == 0 and not list((tmp_path / "spool" / "stow").iterdir())
    assert sample("mri_dicom_node_sent_total", destination="stow", kind="sr") - sent == 1
