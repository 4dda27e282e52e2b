"""Liveness, readiness (before, during and after a load; a refused model) and the metrics page."""

from __future__ import annotations

import threading
import time

import pytest

import service.inference.classifier as classifier_module
from service.inference.classifier import Classifier
from tests.service import images
from tests.service.conftest import MODEL_NAME, make_settings


def _wait_ready(client, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/readyz").status_code == 200:
            return
        time.sleep(0.05)
    pytest.fail("the model never became ready")


def test_liveness(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "alive"}


def test_readiness_turns_200_only_after_the_load(open_client, model_root, monkeypatch):
    gate = threading.Event()
    real_load = classifier_module.load_model

    def gated_load(settings):
        assert gate.wait(60)
        return real_load(settings)

    monkeypatch.setattr(classifier_module, "load_model", gated_load)
    client = open_client(make_settings(model_root))  # no classifier given: the lifespan loads one
    for path in ("/readyz", "/ping"):
        response = client.get(path)
        assert response.status_code == 503
        source = {"origin": "configured", "model_dir": str(model_root)}
        assert response.json() == {"status": "loading", "reason": "model is loading", "model": None, "source": source}
    assert client.get("/healthz").status_code == 200
    response = client.post("/predict", files={"file": ("x.jpg", images.jpeg(1), "image/jpeg")})
    assert response.status_code == 503
    assert response.json() == {"error": "model not ready: model is loading"}
    status = client.get(f"/v1/models/{MODEL_NAME}").json()["model_version_status"][0]
    assert status["state"] == "LOADING"

    gate.set()
    _wait_ready(client)
    body = client.get("/ping").json()
    assert body["status"] == "ready"
    assert body["model"]["name"] == MODEL_NAME
    assert body["model"]["version"] == 1
    assert body["model"]["runtime"] == "tensorflow"
    assert body["model"]["classes"] == ["glioma", "meningioma", "no_tumor", "pituitary"]
    assert client.post("/predict", files={"file": ("x.jpg", images.jpeg(1), "image/jpeg")}).status_code == 200


def test_class_order_mismatch_is_never_ready(open_client, mismatched_root):
    classifier = Classifier(make_settings(mismatched_root))
    assert classifier.load() is False
    client = open_client(make_settings(mismatched_root), classifier)
    reason = (
        "class order mismatch: model has ['meningioma', 'glioma', 'no_tumor', 'pituitary'], "
        "service expects ['glioma', 'meningioma', 'no_tumor', 'pituitary']"
    )
    for path in ("/readyz", "/ping"):
        response = client.get(path)
        assert response.status_code == 503
        source = {"origin": "configured", "model_dir": str(mismatched_root)}
        assert response.json() == {"status": "failed", "reason": reason, "model": None, "source": source}
    response = client.post("/invocations", content=images.jpeg(1), headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 503
    assert response.json() == {"error": f"model not ready: {reason}"}
    status = client.get(f"/v1/models/{MODEL_NAME}").json()["model_version_status"][0]
    assert status["state"] == "END"
    assert status["status"]["error_message"] == reason


def test_missing_model_is_not_ready(open_client, tmp_path):
    client = open_client(make_settings(tmp_path / "nothing-here"))
    deadline = time.monotonic() + 30
    while client.get("/readyz").json()["status"] != "failed" and time.monotonic() < deadline:
        time.sleep(0.05)
    response = client.get("/ping")
    assert response.status_code == 503
    assert response.json()["reason"] == "the model directory does not exist"


def test_metrics(client):
    client.post("/predict", files={"file": ("x.jpg", images.jpeg(1), "image/jpeg")})
    client.post("/predict", files={"file": ("x.jpg", b"junk", "image/jpeg")})
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for needle in (
        'mri_requests_total{method="POST",route="/predict",status="200"}',
        'mri_requests_total{method="POST",route="/predict",status="415"}',
        'mri_request_duration_seconds_bucket{le="0.005",route="/predict"}',
        'mri_stage_duration_seconds_count{stage="decode"}',
        'mri_stage_duration_seconds_count{stage="queue"}',
        'mri_stage_duration_seconds_count{stage="inference"}',
        'mri_stage_duration_seconds_count{stage="encode"}',
        "mri_batch_size_bucket",
        "mri_inflight_requests",
        "mri_queue_depth",
        "mri_rejected_total",
        "mri_predictions_total{label=",
        "mri_prediction_confidence_bucket",
        "mri_model_load_seconds",
        "mri_model_ready",
        'mri_model_info{device="CPU',
    ):
        assert needle in text, needle
    assert 'route="/v1/models/mri-classifier' not in text  # templates, never raw paths


def test_unknown_route_and_method(client):
    assert client.get("/nope").json() == {"error": "Not Found"}
    response = client.get("/predict")
    assert response.status_code == 405
    assert response.json() == {"error": "Method Not Allowed"}
