"""Versions mean one thing: a model reports the number of the folder it is served from, whatever the exporter
stamped in its ``metadata.json``, on every route; ``mri-classifier publish`` adds a model as the next version and
the running service never sees a partial copy."""

from __future__ import annotations

import base64
import io
import json
import shutil
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from service.inference.classifier import Classifier
from service.inference.versions import find_version_dir, version_number
from tests.service import images
from tests.service.conftest import MODEL_NAME, make_settings
from tests.synthetic import mri_like
from training import publish as publishing

DICOM_ACCEPT = 'multipart/related; type="application/dicom"'


@pytest.fixture
def store_with_4(model_root: Path, tmp_path: Path) -> Path:
    """The tiny model (exported as version 1: its metadata says 1) copied by hand into folder 4."""
    store = tmp_path / MODEL_NAME
    shutil.copytree(model_root / "1", store / "4")
    assert json.loads((store / "4" / "metadata.json").read_text())["version"] == 1
    return store


def _dicom_parts(response: Any) -> list[pydicom.Dataset]:
    assert response.status_code == 200, response.text
    ctype = response.headers["content-type"]
    message = BytesParser().parsebytes(f"Content-Type: {ctype}\r\n\r\n".encode() + response.content)
    return [pydicom.dcmread(io.BytesIO(part.get_payload(decode=True))) for part in message.get_payload()]


def _algorithm_versions(report: pydicom.Dataset) -> list[str]:
    """The Algorithm Version (DCM 111003) items anywhere in an SR's content tree."""
    found: list[str] = []

    def walk(dataset: pydicom.Dataset) -> None:
        for item in getattr(dataset, "ContentSequence", []):
            if item.ConceptNameCodeSequence[0].CodeValue == "111003":
                found.append(str(item.TextValue))
            walk(item)

    walk(report)
    return found


def test_version_number_is_the_folder(tmp_path: Path) -> None:
    assert version_number(tmp_path / "4", {"version": 1}) == 4
    assert version_number(tmp_path / "12", {}) == 12
    assert version_number(tmp_path / "model", {"version": 3}) == 3, "no number in the name: the exporter's stamp"
    assert version_number(tmp_path / "model", {"version": "3"}) == 1
    assert version_number(tmp_path / "model", {}) == 1


def test_a_model_copied_into_folder_4_answers_version_4_everywhere(store_with_4: Path, open_client) -> None:
    settings = make_settings(store_with_4)
    classifier = Classifier(settings)
    assert classifier.load(), classifier.reason
    assert classifier.model.info.version == 4
    client = open_client(settings, classifier)
    jpeg = images.jpeg(11)

    ready = client.get("/readyz").json()
    assert ready["model"]["version"] == 4
    assert client.post("/predict", files={"file": ("a.jpg", jpeg, "image/jpeg")}).json()["model_version"] == 4
    # TF Serving: the status, and predict by version number (4 exists, the metadata's 1 does not)
    status = client.get(f"/v1/models/{MODEL_NAME}").json()
    assert [s["version"] for s in status["model_version_status"]] == ["4"]
    body = {"instances": [{"b64": base64.b64encode(jpeg).decode()}]}
    assert client.post(f"/v1/models/{MODEL_NAME}/versions/4:predict", json=body).status_code == 200
    assert client.post(f"/v1/models/{MODEL_NAME}/versions/1:predict", json=body).status_code == 404
    assert client.get(f"/v1/models/{MODEL_NAME}/versions/4").json()["model_version_status"][0]["version"] == "4"
    assert client.get(f"/v1/models/{MODEL_NAME}/versions/1").status_code == 404
    # Open Inference Protocol (v2)
    assert client.get(f"/v2/models/{MODEL_NAME}").json()["versions"] == ["4"]
    assert client.get(f"/v2/models/{MODEL_NAME}/versions/4").status_code == 200
    assert client.get(f"/v2/models/{MODEL_NAME}/versions/1").status_code == 404
    # DICOM results: the SR's algorithm version and the objects' software version
    gray = mri_like(1, np.random.default_rng(5), 64)[:, :, 0]
    uids = {"StudyInstanceUID": generate_uid(), "SeriesInstanceUID": generate_uid()}
    dicom = images.make_dicom(gray, bits=8, tags=uids)
    parts = _dicom_parts(
        client.post("/predict", files={"file": ("a.dcm", dicom, "application/dicom")}, headers={"Accept": DICOM_ACCEPT})
    )
    assert parts, "no DICOM result"
    for part in parts:
        assert str(part.SoftwareVersions) == "4"
    assert _algorithm_versions(parts[0]) == ["4"]


def test_publish_adds_the_next_free_version_and_stamps_it(model_root: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    assert publishing.publish(model_root / "1", store) == store / "1"
    shutil.copytree(model_root / "1", store / "3")
    (store / "5").mkdir()  # a copy someone else is still filling: its number is taken too
    (store / "notes").mkdir()
    new = publishing.publish(model_root / "1", store)
    assert new == store / "6"
    assert json.loads((new / "metadata.json").read_text())["version"] == 6
    assert sorted(p.name for p in store.iterdir()) == ["1", "3", "5", "6", "notes"], "no temporary folder left"


def test_publish_takes_the_next_number_when_another_publisher_wins(
    model_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    real = publishing.next_version
    raced = []

    def racing(model_dir: Path) -> int:
        number = real(model_dir)
        if not raced:  # another publisher renames its complete copy into that number first
            shutil.copytree(model_root / "1", model_dir / str(number))
            raced.append(number)
        return number

    monkeypatch.setattr(publishing, "next_version", racing)
    assert publishing.publish(model_root / "1", store) == store / "2"
    assert raced == [1]


def test_a_partial_copy_is_never_seen_by_the_service(
    model_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    shutil.copytree(model_root / "1", store / "1")
    classifier = Classifier(make_settings(store))
    assert classifier.load(), classifier.reason
    seen: list[tuple[Path, int]] = []
    copy = publishing._copy_file

    def copy_and_look(src: str, dst: str) -> object:
        result = copy(src, dst)
        classifier.poll()  # the hot reload's look at the store, in the middle of the copy
        seen.append((find_version_dir(store), classifier.model.info.version))
        return result

    monkeypatch.setattr(publishing, "_copy_file", copy_and_look)
    assert publishing.publish(model_root / "1", store) == store / "2"
    assert len(seen) > 3 and set(seen) == {(store / "1", 1)}, "the service saw the copy before it was complete"
    classifier.poll()
    assert classifier.model.info.version == 2 and classifier.ready


def test_publish_command(model_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from training.cli import main

    store = tmp_path / "store"
    assert main(["publish", "--model", str(model_root / "1"), "--store", str(store)]) == 0
    assert json.loads(capsys.readouterr().out) == {"model": str(store / "1"), "version": 1}
    assert main(["publish", "--model", str(tmp_path / "nothing"), "--store", str(store)]) == 1
    assert "not a model version folder" in capsys.readouterr().err
    assert sorted(p.name for p in store.iterdir()) == ["1"]
