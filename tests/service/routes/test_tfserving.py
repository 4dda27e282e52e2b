"""TensorFlow Serving REST compatibility routes."""

from __future__ import annotations

import base64
import json

import numpy as np

from service.preprocessing import PreprocessConfig, preprocess
from tests.service import images
from tests.service.conftest import IMAGE_SIZE, MODEL_NAME

CONFIG = PreprocessConfig(image_size=IMAGE_SIZE)


def test_predict_latest(client, expected):
    data = images.jpeg(50)
    payload = {"instances": [{"b64": base64.b64encode(data).decode()}]}
    response = client.post(f"/v1/models/{MODEL_NAME}:predict", json=payload)
    assert response.status_code == 200, response.text
    assert np.allclose(response.json()["predictions"], expected(preprocess(data, CONFIG)[None]), atol=1e-5)


def test_predict_version_and_signature(client):
    rgb = images.mri_slice(51, size=32)
    payload = {"signature_name": "serving_default", "instances": [rgb.tolist(), rgb.tolist()]}
    response = client.post(f"/v1/models/{MODEL_NAME}/versions/1:predict", json=payload)
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    assert len(predictions) == 2 and np.allclose(predictions[0], predictions[1])


def test_body_is_json_whatever_the_content_type(client):
    """``curl -d`` sends application/x-www-form-urlencoded; TF Serving reads JSON anyway."""
    body = json.dumps({"instances": [images.mri_slice(2, size=16).tolist()]}).encode()
    response = client.post(
        f"/v1/models/{MODEL_NAME}:predict", content=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 200
    as_json = client.post(
        f"/v1/models/{MODEL_NAME}:predict", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.json()["predictions"] == as_json.json()["predictions"]
    assert len(response.json()["predictions"]) == 1 and len(response.json()["predictions"][0]) == 4


def test_unknown_model_or_version_is_404(client):
    payload = {"instances": [images.mri_slice(1, size=16).tolist()]}
    response = client.post("/v1/models/other:predict", json=payload)
    assert response.status_code == 404
    assert response.json() == {"error": "Servable not found for request: Latest(other)"}
    response = client.post(f"/v1/models/{MODEL_NAME}/versions/7:predict", json=payload)
    assert response.status_code == 404
    assert response.json() == {"error": f"Servable not found for request: Specific({MODEL_NAME}, 7)"}
    assert client.get("/v1/models/other").status_code == 404


def test_model_status(client):
    response = client.get(f"/v1/models/{MODEL_NAME}")
    assert response.status_code == 200
    assert response.json() == {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    assert client.get(f"/v1/models/{MODEL_NAME}/versions/1").json()["model_version_status"][0]["state"] == "AVAILABLE"


def test_malformed_request(client):
    response = client.post(f"/v1/models/{MODEL_NAME}:predict", json={"instances": "nope"})
    assert response.status_code == 422
    assert response.json() == {"error": "instances must be a non-empty list"}
