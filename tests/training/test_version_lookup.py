"""Issue 14 item 17: training code finds "the newest version" with the service's one rule
(:func:`service.classifier.find_version_dir`: the highest numbered folder holding a saved_model.pb)."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.classifier import find_version_dir
from training import sagemaker_deploy


def _version(root: Path, name: str, saved_model: bool) -> Path:
    folder = root / name
    (folder / "variables").mkdir(parents=True)
    (folder / "metadata.json").write_text("{}")
    if saved_model:
        (folder / "saved_model.pb").write_bytes(b"graph")
    return folder


def test_package_ships_the_version_the_service_would_load(tmp_path):
    complete = _version(tmp_path, "3", saved_model=True)
    _version(tmp_path, "10", saved_model=False)  # a copy still in progress
    assert find_version_dir(tmp_path) == complete
    assert sagemaker_deploy.find_version(tmp_path) == complete
    with pytest.raises(sagemaker_deploy.DeployError, match=r"missing saved_model\.pb"):
        sagemaker_deploy.find_version(tmp_path, "10")  # asked for by name: refused, not swapped
