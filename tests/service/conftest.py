"""Fixtures for the service tests: test clients of the session's tiny model (``tests/conftest.py`` builds it
and its classifiers), opened with ``with TestClient(app)`` so the lifespan runs."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from service.app import create_app
from service.config import Settings
from service.inference.classifier import Classifier
from tests.tiny_model import DATA_FINGERPRINT, IMAGE_SIZE, MODEL_NAME, make_settings, metadata

# the tiny model's constants and helpers, imported from here by the tests of every folder
__all__ = ["DATA_FINGERPRINT", "IMAGE_SIZE", "MODEL_NAME", "make_settings", "metadata"]


@pytest.fixture
def open_client() -> Iterator[Callable[..., TestClient]]:
    """``open_client(settings, classifier, **client_kwargs)`` -> a started TestClient, closed after the test."""
    with ExitStack() as stack:

        def _open(settings: Settings, classifier: Classifier | None = None, **kwargs: Any) -> TestClient:
            return stack.enter_context(TestClient(create_app(settings, classifier), **kwargs))

        yield _open


@pytest.fixture
def client(open_client: Callable[..., TestClient], model_root: Path, tf_classifier: Classifier) -> TestClient:
    """A client of the service with the loaded TensorFlow classifier."""
    return open_client(make_settings(model_root), tf_classifier)
