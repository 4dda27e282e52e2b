"""The node's parts on their own: the spool's bound and clean-up, series completion, the STOW-RS answer, the
retry schedule, the transfer syntaxes offered, and the settings a node refuses to start with."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.config import DicomNodeSettings, Settings
from service.dicom_node.delivery import RetryPolicy, _stow_outcome
from service.dicom_node.node import problems
from service.dicom_node.scp import transfer_syntaxes
from service.dicom_node.series import SeriesTracker
from service.dicom_node.spool import Spool
from service.labels import CLASSES
from service.protocols.dicom_results import read_source
from service.schemas import InputCheck, Prediction
from tests.dicom_node.conftest import mr_series


def node_settings(**values: object) -> DicomNodeSettings:
    return DicomNodeSettings(_env_file=None, **values)  # type: ignore[call-arg]


def test_the_spool_is_bounded_private_and_emptied(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=3000)
    first = spool.put("dimse", b"a" * 1000)
    second = spool.put("dimse", b"b" * 1500)
    assert first is not None and second is not None
    assert spool.put("dimse", b"c" * 600) is None, "over the bound: refused, not written"
    assert spool.used_bytes == 2500 and len(list((tmp_path / "spool").rglob("*"))) == 3  # the folder and 2 files
    assert stat.S_IMODE(first.stat().st_mode) == 0o600
    assert spool.pending("dimse") == [first, second] and spool.pending("stow") == []
    again = Spool(tmp_path / "spool", max_bytes=3000)  # a restart finds them
    assert again.used_bytes == 2500
    for path in again.pending("dimse"):
        again.remove(path)
    assert again.used_bytes == 0 and not list((tmp_path / "spool" / "dimse").iterdir())


def _prediction(label: str, warning: bool = False) -> Prediction:
    check = InputCheck(
        warning=warning,
        likely_mri=True,
        confident=not warning,
        familiar=True,
        reasons=[],
        message=None,
        score=0.1,
        colour_spread=0.0,
        border_brightness=0.0,
        ood_score=None,
    )
    probabilities = {name: 0.9 if name == label else 0.1 / 3 for name in CLASSES}
    return Prediction(label=label, confidence=0.9, probabilities=probabilities, check=check)


def test_a_series_is_complete_once_quiet_with_nothing_pending() -> None:
    now = [0.0]
    tracker = SeriesTracker(quiet_s=5.0, clock=lambda: now[0])
    first, second = (read_source(data) for data in mr_series(2))
    series = tracker.received(first)
    assert tracker.received(second) is series
    tracker.classified(series, first, _prediction("glioma"), None)  # type: ignore[arg-type]
    now[0] = 100.0
    assert tracker.close_quiet() == ([], []), "one slice still pending"
    tracker.failed(series)
    now[0] = 104.0
    assert tracker.close_quiet() == ([], [])
    now[0] = 105.0
    closed, finished = tracker.close_quiet()
    assert closed == [series] and finished == [series.study] and len(tracker) == 0
    line = finished[0].log_line()
    assert "2 slice(s) received, 1 classified, 1 failed" in line and "glioma 1" in line
    assert str(first.dataset.StudyInstanceUID) not in line


def test_stow_answers_name_the_failed_and_stored_instances() -> None:
    answer = {
        "00081198": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": ["1.2.3"]}}]},
        "00081199": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": ["1.2.4"]}}]},
    }
    assert _stow_outcome(json.dumps(answer).encode()) == ({"1.2.3"}, {"1.2.4"})
    assert _stow_outcome(b"<html>") == (set(), set())
    assert _stow_outcome(b"") == (set(), set())


def test_retries_back_off_to_a_ceiling() -> None:
    policy = RetryPolicy(attempts=5, backoff_s=2.0, max_backoff_s=10.0)
    assert [policy.delay(n) for n in range(1, 6)] == [2.0, 4.0, 8.0, 10.0, 10.0]


def test_uncompressed_and_decodable_transfer_syntaxes_are_offered() -> None:
    offered = transfer_syntaxes()
    assert offered[:2] == ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]
    assert "1.2.840.10008.1.2.5" in offered  # RLE: pydicom decodes it itself
    assert "1.2.840.10008.1.2.4.51" not in offered  # JPEG Extended 12-bit: not decodable here


def test_a_node_needs_an_allow_list_a_destination_and_a_queue_that_fits() -> None:
    settings = Settings(_env_file=None, max_queue_size=16)  # type: ignore[call-arg]
    found = problems(settings, node_settings())
    assert len(found) == 3 and "ALLOWED_AETS is empty" in found[0] and "no destination" in found[1]
    assert problems(settings, node_settings(allowed_aets="PACS", stow_url="http://pacs", max_pending=16)) == []


@pytest.mark.parametrize(
    "values",
    [
        {"ae_title": "A" * 17},
        {"allowed_aets": "GOOD,BAD\\AE"},
        {"store_host": "pacs"},  # without its AE title
        {"tls_cert_file": "cert.pem"},  # without its key
        {"stow_url": "ftp://pacs"},
        {"stow_token": "t", "stow_username": "u", "stow_password": "p"},
    ],
)
def test_inconsistent_settings_are_refused(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        node_settings(**values)


def test_settings_come_from_mri_dicom_node_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MRI_DICOM_NODE_ALLOWED_AETS", "ORTHANC, DCM4CHEE")
    monkeypatch.setenv("MRI_DICOM_NODE_PORT", "104")
    settings = node_settings()
    assert settings.allowed_aets == ["ORTHANC", "DCM4CHEE"] and settings.port == 104
