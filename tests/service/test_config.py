"""Settings: env prefix, SageMaker's variables, validation; the ``serve`` flags; content negotiation helpers."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service import mime, server
from service.config import Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in (
        "MRI_PORT",
        "MRI_LOG_LEVEL",
        "MRI_MAX_BATCH_SIZE",
        "MRI_RUNTIME",
        "MRI_MODEL_DIR",
        mime.SAGEMAKER_BIND_TO_PORT,
        mime.SAGEMAKER_CONTAINER_LOG_LEVEL,
    ):
        monkeypatch.delenv(name, raising=False)


def settings(**kwargs) -> Settings:
    return Settings(_env_file=None, **kwargs)  # type: ignore[call-arg]


def test_defaults_fit_sagemaker():
    s = settings()
    assert (str(s.model_dir), s.port, s.runtime) == ("/opt/ml/model", 8080, "auto")
    assert s.max_body_bytes == 10 * 1024 * 1024
    assert s.graceful_shutdown_s < 30  # SageMaker sends SIGKILL 30 s after SIGTERM


def test_env_prefix_and_sagemaker_port(monkeypatch):
    monkeypatch.setenv("MRI_PORT", "9000")
    monkeypatch.setenv("MRI_MAX_BATCH_SIZE", "16")
    monkeypatch.setenv("MRI_RUNTIME", "openvino")
    s = settings()
    assert (s.port, s.max_batch_size, s.runtime) == (9000, 16, "openvino")
    monkeypatch.setenv(mime.SAGEMAKER_BIND_TO_PORT, "9100")
    assert settings().port == 9100
    assert settings(port=9200).port == 9200  # an explicit value (a CLI flag) wins


def test_sagemaker_numeric_log_level(monkeypatch):
    monkeypatch.setenv(mime.SAGEMAKER_CONTAINER_LOG_LEVEL, "10")
    assert settings().log_level == "debug"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"runtime": "pytorch"},
        {"max_batch_size": 0},
        {"port": 70000},
        {"max_images_per_request": 100, "max_queue_size": 10},
    ],
)
def test_unsafe_values_are_refused(kwargs):
    with pytest.raises(ValidationError):
        settings(**kwargs)


def test_serve_rejects_bad_flags_without_starting(capsys):
    assert server.run(["--max-batch-size", "0"]) == 2
    assert "invalid settings" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        server.run(["--runtime", "pytorch"])


@pytest.mark.parametrize(
    ("accept", "ok"),
    [
        (None, True),
        ("", True),
        ("*/*", True),
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("text/html, application/*;q=0.2", True),
        ("text/html", False),
        ("application/json;q=0", False),
        ("image/png, text/csv", False),
    ],
)
def test_accepts_json(accept, ok):
    assert mime.accepts_json(accept) is ok


def test_media_type():
    assert mime.media_type("Application/JSON; charset=utf-8") == "application/json"
    assert mime.media_type(None) == ""
