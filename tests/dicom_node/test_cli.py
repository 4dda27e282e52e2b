"""``mri-classifier dicom-node`` as a user runs it: a real process configured by ``MRI_*`` variables, talked to by
dcmtk's ``echoscu`` and ``storescu`` (a second, independent DICOM implementation), sending its results to Orthanc
by STOW-RS, observable on its HTTP port, stopped by SIGTERM after it has delivered, its log free of PHI."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest

from tests.dicom_node.conftest import NODE_AET, PATIENT, Orthanc, mr_series, study_uid_of, wait_for
from tests.processes import free_port, serve_command

pytestmark = pytest.mark.slow


def dcmtk(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed: apt-get install dcmtk (`make dicom-tools`, .ci/run)", pytrace=False)
    return path


def test_settings_that_cannot_run_a_node_exit_2_with_the_reason(tmp_path: Path) -> None:
    env = {**os.environ, "MRI_DICOM_NODE_STOW_URL": "http://127.0.0.1:9/dicom-web"}
    env.pop("MRI_DICOM_NODE_ALLOWED_AETS", None)
    result = subprocess.run(
        [*serve_command(), "dicom-node"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert "MRI_DICOM_NODE_ALLOWED_AETS is empty" in result.stderr
    env["MRI_DICOM_NODE_ALLOWED_AETS"], env["MRI_DICOM_NODE_STOW_PASSWORD"] = "PACS", "secret-password-1"
    result = subprocess.run(
        [*serve_command(), "dicom-node"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and "STOW_USERNAME" in result.stderr
    assert "secret-password-1" not in result.stderr


def test_dcmtk_talks_to_the_command(model_root: Path, orthanc: Orthanc, tmp_path: Path) -> None:
    echoscu, storescu = dcmtk("echoscu"), dcmtk("storescu")
    port, http_port = free_port(), free_port()
    env = {
        **os.environ,
        "MRI_MODEL_DIR": str(model_root),
        "MRI_RUNTIME": "tensorflow",
        "MRI_MAX_QUEUE_SIZE": "16",
        "MRI_DICOM_NODE_PORT": str(port),
        "MRI_DICOM_NODE_HTTP_PORT": str(http_port),
        "MRI_DICOM_NODE_ALLOWED_AETS": "STORESCU,ECHOSCU",
        "MRI_DICOM_NODE_MAX_PENDING": "16",
        "MRI_DICOM_NODE_STOW_URL": orthanc.dicomweb,
        "MRI_DICOM_NODE_SERIES_QUIET_S": "1",
    }
    slices = mr_series(3, seed=100)
    files = []
    for index, data in enumerate(slices):
        files.append(tmp_path / f"slice{index}.dcm")
        files[-1].write_bytes(data)
    ct = pydicom.dcmread(io.BytesIO(slices[0]))
    ct.SOPClassUID = ct.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ct.SOPInstanceUID = ct.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ct.Modality = "CT"
    ct.save_as(tmp_path / "ct.dcm", enforce_file_format=True)
    study = study_uid_of(slices[0])
    log = tmp_path / "node.log"
    with log.open("wb") as out:
        process = subprocess.Popen([*serve_command(), "dicom-node"], env=env, cwd=tmp_path, stdout=out, stderr=out)
    try:
        url = f"http://127.0.0.1:{http_port}"
        wait_for(lambda: _status(f"{url}/readyz") == 200, timeout=150, what="/readyz 200")
        assert _status(f"{url}/healthz") == 200 and _status(f"{url}/nothing") == 404

        call = ["-aec", NODE_AET, "127.0.0.1", str(port)]
        assert _run([echoscu, "-aet", "ECHOSCU", *call]).returncode == 0
        refused = _run([echoscu, "-aet", "INTRUDER", *call])
        assert refused.returncode != 0 and "Calling AE Title Not Recognized" in refused.stdout + refused.stderr
        sent = _run([storescu, "-aet", "STORESCU", *call, *map(str, files)])
        assert sent.returncode == 0, sent.stdout + sent.stderr
        not_mr = _run([storescu, "-aet", "STORESCU", *call, str(tmp_path / "ct.dcm")])
        assert not_mr.returncode != 0 and "no presentation context" in (not_mr.stdout + not_mr.stderr).lower()

        wait_for(lambda: orthanc.count(study) == 3 + 1, what="3 SRs and a summary in Orthanc")
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        assert 'mri_dicom_node_received_total{status="accepted"} 3.0' in metrics
        assert 'mri_dicom_node_sent_total{destination="stow",kind="sr"} 3.0' in metrics
        assert "mri_dicom_node_queue_depth 0.0" in metrics
        assert "mri_batch_size_count" in metrics  # the service's batcher, shared with /predict
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(60)
    assert code == 0
    text = log.read_text()
    assert "complete: 1 series, 3 slice(s) received, 3 classified" in text
    for value in (PATIENT["name"], "Doe", PATIENT["id"], study, "ACC-7731", "St-Elsewhere"):
        assert value not in text


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.HTTPError:
        return 0


def _run(command: list[str]) -> Any:
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert time.monotonic() - started < 60
    return result
