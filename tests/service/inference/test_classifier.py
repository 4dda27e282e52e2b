"""The model wrapper: which version is loaded, what metadata is refused, readiness and its reasons."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from service.errors import ModelNotReadyError
from service.inference.classifier import Classifier, ModelState, read_metadata
from service.inference.runtime import ModelLoadError
from service.inference.versions import find_version_dir
from tests.service.conftest import IMAGE_SIZE, make_settings


def _fake_version(root: Path, name: str, with_model: bool = True) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    if with_model:
        (folder / "saved_model.pb").write_bytes(b"")
    return folder


def test_newest_numeric_version_is_chosen(tmp_path):
    for name in ("1", "3", "12"):
        _fake_version(tmp_path, name)
    _fake_version(tmp_path, ".tmp-13-abcd")  # an export still being written
    _fake_version(tmp_path, "latest")
    _fake_version(tmp_path, "14", with_model=False)  # an empty folder
    assert find_version_dir(tmp_path) == tmp_path / "12"
    assert find_version_dir(tmp_path, version=3) == tmp_path / "3"
    with pytest.raises(ModelLoadError, match="model version 7 not found"):
        find_version_dir(tmp_path, version=7)


def test_plain_saved_model_folder_and_missing_folders(tmp_path):
    plain = _fake_version(tmp_path, "plain")
    assert find_version_dir(plain) == plain
    with pytest.raises(ModelLoadError, match="the model directory does not exist"):
        find_version_dir(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no SavedModel version found in the model directory"):
        find_version_dir(tmp_path / "empty")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "metadata.json missing: cannot verify the class order"),
        ("{not json", "metadata.json is not valid JSON"),
        ("[]", "metadata.json is not a JSON object"),
        (json.dumps({"preprocessing": {}}), "class order mismatch: model has None"),
        (json.dumps({"classes": ["glioma", "meningioma", "no_tumor"], "preprocessing": {}}), "class order mismatch"),
        (json.dumps({"classes": ["glioma", "meningioma", "no_tumor", "pituitary"]}), "has no preprocessing section"),
    ],
)
def test_metadata_is_checked(tmp_path, content, reason):
    if content is not None:
        (tmp_path / "metadata.json").write_text(content)
    with pytest.raises(ModelLoadError) as excinfo:
        read_metadata(tmp_path)
    assert reason in excinfo.value.reason


def test_newest_real_version_loads(model_root, tmp_path):
    root = tmp_path / "models"
    shutil.copytree(model_root / "1", root / "1")
    shutil.copytree(model_root / "1", root / "3")
    meta = json.loads((root / "3" / "metadata.json").read_text())
    (root / "3" / "metadata.json").write_text(json.dumps({**meta, "version": 3}))
    classifier = Classifier(make_settings(root, warmup=False))
    assert classifier.load(), classifier.reason
    assert classifier.model.info.version == 3


def test_plain_saved_model_folder_loads(model_root):
    classifier = Classifier(make_settings(model_root / "1", model_name="brain"))
    assert classifier.load(), classifier.reason
    info = classifier.model.info
    assert (info.name, info.version, info.image_size, info.runtime) == ("brain", 1, IMAGE_SIZE, "tensorflow")
    probs = classifier.predict(np.zeros((3, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8))
    assert probs.shape == (3, 4)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_a_model_that_does_not_fit_its_metadata_is_refused(model_root, tmp_path):
    root = tmp_path / "models"
    shutil.copytree(model_root / "1", root / "1")
    meta = json.loads((root / "1" / "metadata.json").read_text())
    meta["preprocessing"]["image_size"] = IMAGE_SIZE + 16
    (root / "1" / "metadata.json").write_text(json.dumps(meta))
    classifier = Classifier(make_settings(root))
    assert classifier.load() is False
    assert classifier.state is ModelState.FAILED
    assert classifier.reason == f"metadata image_size {IMAGE_SIZE + 16} does not match the model input {IMAGE_SIZE}"


def test_not_ready_until_loaded(model_root):
    classifier = Classifier(make_settings(model_root))
    assert classifier.state is ModelState.IDLE and not classifier.ready
    with pytest.raises(ModelNotReadyError, match="model not ready: model not loaded yet"):
        classifier.predict(np.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8))


def test_the_load_line_is_written_before_the_service_reports_ready(model_root):
    """Whoever sees the service ready finds the line that says what it serves: the line comes first."""
    classifier = Classifier(make_settings(model_root, warmup=False))
    seen: list[tuple[str, bool]] = []

    class Recorder(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append((record.getMessage(), classifier.ready))

    logger = logging.getLogger("service.inference.classifier")
    handler, level = Recorder(logging.INFO), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        assert classifier.load() is True
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    served = [ready for message, ready in seen if message.startswith("serving ")]
    assert served == [False]
    assert classifier.ready


def test_class_order_mismatch_refuses_the_model(mismatched_root):
    classifier = Classifier(make_settings(mismatched_root))
    assert classifier.load() is False
    assert classifier.state is ModelState.FAILED
    assert classifier.reason is not None and classifier.reason.startswith("class order mismatch")
    with pytest.raises(ModelNotReadyError):
        _ = classifier.model


def test_one_definition_of_the_newest_version_for_service_exporter_and_packager(tmp_path: Path) -> None:
    """A version folder still being copied (no saved_model.pb yet) is never served or shipped, but the exporter
    never writes into it either."""
    from training.export import next_version
    from training.sagemaker_deploy import DeployError, find_version

    for number in (1, 2):
        (tmp_path / str(number) / "variables").mkdir(parents=True)
        (tmp_path / str(number) / "saved_model.pb").write_bytes(b"pb")
        (tmp_path / str(number) / "metadata.json").write_text("{}")
    (tmp_path / "3").mkdir()  # a copy in progress
    (tmp_path / "notes").mkdir()
    assert find_version_dir(tmp_path) == tmp_path / "2"
    assert find_version(tmp_path) == tmp_path / "2"
    assert next_version(tmp_path) == 4
    with pytest.raises(DeployError, match="no SavedModel version"):
        find_version(tmp_path / "3")


def test_one_class_order_check() -> None:
    from service.labels import CLASSES, ClassOrderError, check_class_order

    check_class_order(list(CLASSES))
    for wrong in (None, "glioma", [*CLASSES[1:], CLASSES[0]], [*CLASSES, "extra"]):
        with pytest.raises(ClassOrderError, match="class order mismatch"):
            check_class_order(wrong)
