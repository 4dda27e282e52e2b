"""Shared fixtures: quiet TensorFlow, synthetic datasets made on the fly, the optional shared dataset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "brain-tumor-mri"


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory: pytest.TempPathFactory):
    """A small generated train/test pair with planted exact, near and cross-label duplicates."""
    from tests.synthetic import make_dataset

    return make_dataset(tmp_path_factory.mktemp("synthetic"), per_class=24, test_per_class=6)


@pytest.fixture(scope="session")
def shared_dataset() -> Path:
    """The real dataset beside the checkout; tests using it are an optional extra (skipped without it)."""
    if not (SHARED_DATA / "Training").is_dir():
        pytest.skip("optional: ../shared/data/brain-tumor-mri is not present")
    return SHARED_DATA
