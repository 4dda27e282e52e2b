"""Versioned model folders, TensorFlow Serving's layout: ``<model_dir>/<version>/saved_model.pb`` beside
``metadata.json``. The one definition of "a version", of "the newest version" and of the number a model
reports, used by the service, the evaluator, the exporter, ``mri-classifier publish`` and the SageMaker packager.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from service.inference.runtime import ModelLoadError

SAVED_MODEL_FILE = "saved_model.pb"
METADATA_FILE = "metadata.json"


def version_folders(model_dir: Path) -> dict[int, Path]:
    """Every numeric subfolder of ``model_dir`` by version number, complete or not (none when it is missing)."""
    if not model_dir.is_dir():
        return {}
    return {int(p.name): p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()}


def is_saved_model(folder: Path) -> bool:
    """Whether ``folder`` holds a SavedModel graph (a version being copied may not yet)."""
    return (folder / SAVED_MODEL_FILE).is_file()


def find_version_dir(model_dir: Path, version: int | None = None) -> Path:
    """The folder to load: ``model_dir`` itself when it is a SavedModel, else its version ``version`` or its
    highest numeric version holding a SavedModel. ``ModelLoadError`` (with a reason, no path) otherwise."""
    if is_saved_model(model_dir):
        return model_dir
    if not model_dir.is_dir():
        raise ModelLoadError("the model directory does not exist")
    versions = {number: path for number, path in version_folders(model_dir).items() if is_saved_model(path)}
    if not versions:
        raise ModelLoadError("no SavedModel version found in the model directory")
    if version is not None:
        if version not in versions:
            raise ModelLoadError(f"model version {version} not found")
        return versions[version]
    return versions[max(versions)]


def next_version(model_dir: Path) -> int:
    """One more than the highest numeric folder under ``model_dir``, complete or not (1 when there is none), so
    that an export never lands in a folder that a copy is filling."""
    return max(version_folders(model_dir), default=0) + 1


def version_number(version_dir: Path, metadata: Mapping[str, Any]) -> int:
    """The version a model reports: the number of the folder it is served from (a copy into folder 4 is version
    4, whatever its ``metadata.json`` says). Only a SavedModel served from a folder whose name is not a number
    falls back to the exporter's stamp in the metadata, then to 1."""
    if version_dir.name.isdigit():
        return int(version_dir.name)
    stamp = metadata.get("version")
    return stamp if isinstance(stamp, int) and not isinstance(stamp, bool) and stamp >= 1 else 1
