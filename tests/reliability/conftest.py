"""Fixtures of the reliability tests (the session's tiny model and classifiers come from ``tests/conftest.py``): an
in-process corpus client, and a real ``mri-classifier serve`` process on a loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.inference.classifier import Classifier
from tests.reliability.server import ServerProcess
from tests.service.conftest import make_settings

#: The real server's limits: small, so over-limit uploads stay quick to send.
LIVE_MAX_BODY_BYTES = 1 << 20
LIVE_BODY_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def corpus_client(model_root: Path, tf_classifier: Classifier) -> Iterator[TestClient]:
    """The app on the loaded tiny model; server errors come back as responses (so a 5xx can be asserted)."""
    settings = make_settings(model_root, max_pixels=250_000, max_images_per_request=8)
    with TestClient(create_app(settings, tf_classifier), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="session")
def live_server(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real server for the session: debug logs and access log on, captured to a file."""
    server = ServerProcess(
        model_root,
        tmp_path_factory.mktemp("live"),
        MRI_MAX_BODY_BYTES=str(LIVE_MAX_BODY_BYTES),
        MRI_BODY_TIMEOUT_S=str(LIVE_BODY_TIMEOUT_S),
        MRI_LOG_LEVEL="debug",
        MRI_ACCESS_LOG="true",
    )
    with server:
        server.wait_ready()
        yield server
        assert_clean_log(server.log())


def assert_clean_log(log: str) -> None:
    """No traceback, no error and no 5xx in a server's log (only /readyz said 503, while the model loaded).
    Checked when the session's live server stops, after every test that used it, whatever their order."""
    assert "Traceback" not in log and " ERROR " not in log
    answers = [line for line in log.splitlines() if "uvicorn.access" in line and "/readyz" not in line]
    assert answers and not [line for line in answers if '" 5' in line], "a 5xx answer"
