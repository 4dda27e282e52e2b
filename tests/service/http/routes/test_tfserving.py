"""TensorFlow Serving REST compatibility routes."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from service.errors import PayloadTooLargeError
from service.imaging.preprocessing import PreprocessConfig, preprocess
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


@pytest.mark.parametrize("height", [8, 9, 300])
@pytest.mark.parametrize("wrapped", [False, True])
def test_the_json_pre_scan_lets_every_valid_batch_through(height, wrapped):
    """The byte-count bound refuses only what no valid batch can be: the narrowest pixel arrays (8 columns,
    the most arrays per value), b64 instances and the ``{"images": ...}`` form, at the instance limit."""
    from service.imaging.preprocessing import MIN_SIDE
    from service.protocols.codec import check_json_shape, parse_instances

    limit = 16
    narrow = np.zeros((height, MIN_SIDE, 3), np.uint8).tolist()
    b64 = {"b64": base64.b64encode(images.jpeg(1)).decode()}
    instances = [({"images": narrow} if wrapped else narrow) if i % 2 else b64 for i in range(limit)]
    for payload in ({"instances": instances, "signature_name": "serving_default"}, {"inputs": {"images": instances}}):
        for separators in ((",", ":"), (", ", ": ")):
            body = json.dumps(payload, separators=separators).encode()
            check_json_shape(body, limit)
            parsed, _ = parse_instances(body, limit, 1 << 20)
            assert len(parsed) == limit
    with pytest.raises(PayloadTooLargeError, match="more arrays or objects"):
        check_json_shape(json.dumps({"instances": [[[[0, 0, 0]] * 8] * 8, *[[]] * 2000]}).encode(), limit)
    with pytest.raises(PayloadTooLargeError, match="more strings"):
        check_json_shape(json.dumps({"instances": [b64], "x": [""] * 2000}).encode(), limit)


def test_pixel_arrays_are_converted_in_steps_to_the_same_array():
    """Large JSON pixel arrays are converted piece by piece (the GIL is handed back between pieces)."""
    from service.protocols.codec import PIXELS_PER_STEP, parse_instances, pixels_to_rgb

    rng = np.random.default_rng(4)
    wide = rng.integers(0, 256, (8, PIXELS_PER_STEP * 2 + 5, 3))
    body = json.dumps({"instances": [wide.tolist(), {"images": (wide[:, :9] + 0.25).tolist()}]}).encode()
    (first, second), _ = parse_instances(body, 4, 1 << 20)
    assert isinstance(first, np.ndarray) and isinstance(second["images"], np.ndarray)
    np.testing.assert_array_equal(pixels_to_rgb(first, 0, 1 << 20), wide.astype(np.uint8))
    np.testing.assert_array_equal(pixels_to_rgb(second["images"], 1, 1 << 20), np.rint(wide[:, :9] + 0.25))
