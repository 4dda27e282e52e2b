"""The Open Inference Protocol (KServe V2) REST routes, in process: JSON and binary tensors, the classification
extension, and errors in the protocol's ``{"error": ...}`` shape. The real ``tritonclient`` against a real
server is ``tests/service/test_tritonclient.py``."""

from __future__ import annotations

import base64
import json
import struct

import numpy as np
import pytest

from service.labels import CLASSES
from service.preprocessing import PreprocessConfig, preprocess, to_model_input
from tests.service import images
from tests.service.conftest import IMAGE_SIZE, MODEL_NAME

CONFIG = PreprocessConfig(image_size=IMAGE_SIZE)
INFER = f"/v2/models/{MODEL_NAME}/infer"


def binary_request(header: dict, tail: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + tail, {"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"}


def split_answer(response) -> tuple[dict, bytes]:
    size = int(response.headers["Inference-Header-Content-Length"])
    return json.loads(response.content[:size]), response.content[size:]


def test_server_and_model_metadata(client):
    server = client.get("/v2").json()
    assert server["name"] == "mri-classifier"
    assert set(server["extensions"]) == {"binary_tensor_data", "classification"}
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    metadata = client.get(f"/v2/models/{MODEL_NAME}").json()
    assert metadata["name"] == MODEL_NAME and metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, -1, -1, 3]}]
    assert {o["name"]: o["shape"] for o in metadata["outputs"]} == {"probabilities": [-1, 4], "warning": [-1]}
    assert client.get(f"/v2/models/{MODEL_NAME}/versions/1").json() == metadata
    assert client.get(f"/v2/models/{MODEL_NAME}/ready").json() == {"name": MODEL_NAME, "ready": True}
    assert client.get(f"/v2/models/{MODEL_NAME}/versions/1/ready").status_code == 200


def test_unknown_model_and_version_are_404_in_the_protocol_shape(client):
    for path in ("/v2/models/other", "/v2/models/other/ready", f"/v2/models/{MODEL_NAME}/versions/9/ready"):
        response = client.get(path)
        assert response.status_code == 404 and set(response.json()) == {"error"}, path
    response = client.post(f"/v2/models/{MODEL_NAME}/versions/9/infer", json={"inputs": []})
    assert response.status_code == 404 and "no version '9'" in response.json()["error"]


def test_not_ready_while_the_model_loads(open_client, model_root):
    from service.classifier import Classifier
    from tests.service.conftest import make_settings

    settings = make_settings(model_root / "missing")
    client = open_client(settings, Classifier(settings))
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 503
    response = client.get(f"/v2/models/{MODEL_NAME}/ready")
    assert response.status_code == 503 and "not ready" in response.json()["error"]


def test_uint8_pixels_as_json(client, expected):
    batch = np.stack([images.mri_slice(s, size=40, cls=s % 4) for s in (1, 2)])
    payload = {
        "id": "req-1",
        "inputs": [{"name": "images", "datatype": "UINT8", "shape": list(batch.shape), "data": batch.ravel().tolist()}],
    }
    response = client.post(INFER, json=payload)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model_name"] == MODEL_NAME and answer["model_version"] == "1" and answer["id"] == "req-1"
    outputs = {o["name"]: o for o in answer["outputs"]}
    probs = np.array(outputs["probabilities"]["data"]).reshape(outputs["probabilities"]["shape"])
    reference = expected(np.stack([to_model_input(image, CONFIG) for image in batch]))
    assert probs.shape == (2, 4) and np.allclose(probs, reference, atol=1e-5)
    assert outputs["warning"]["datatype"] == "BOOL" and len(outputs["warning"]["data"]) == 2


def test_fp32_binary_in_and_out_matches_json(client, expected):
    batch = np.stack([images.mri_slice(s, size=32) for s in (3, 4, 5)]).astype(np.float32)
    header = {
        "inputs": [
            {
                "name": "images",
                "datatype": "FP32",
                "shape": [3, 32, 32, 3],
                "parameters": {"binary_data_size": batch.nbytes},
            }
        ],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
    }
    body, headers = binary_request(header, batch.tobytes())
    response = client.post(INFER, content=body, headers=headers)
    assert response.status_code == 200, response.text
    answer, tail = split_answer(response)
    (output,) = answer["outputs"]
    assert output["parameters"] == {"binary_data_size": 3 * 4 * 4} and "data" not in output
    binary_probs = np.frombuffer(tail, dtype="<f4").reshape(3, 4)
    as_json = client.post(
        INFER,
        json={"inputs": [{"name": "images", "datatype": "FP32", "shape": [3, 32, 32, 3], "data": batch.tolist()}]},
    ).json()
    json_probs = np.array(next(o for o in as_json["outputs"] if o["name"] == "probabilities")["data"]).reshape(3, 4)
    reference = expected(batch)  # the SavedModel called directly, not through the service
    assert np.allclose(binary_probs, reference, atol=1e-5) and np.allclose(json_probs, reference, atol=1e-5)


@pytest.mark.parametrize("fmt", ["jpeg", "png", "dicom"])
def test_bytes_input_holds_encoded_images(client, expected, fmt):
    data = {"jpeg": images.jpeg(60), "png": images.png_variants()["gray16"], "dicom": images.dicom()}[fmt]
    tail = struct.pack("<I", len(data)) + data
    header = {
        "inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(tail)}}]
    }
    body, headers = binary_request(header, tail)
    response = client.post(INFER, content=body, headers=headers)
    assert response.status_code == 200, response.text
    probs = next(o for o in response.json()["outputs"] if o["name"] == "probabilities")["data"]
    assert np.allclose(probs, expected(preprocess(data, CONFIG)[None]).ravel(), atol=1e-5)


def test_bytes_input_as_base64_json(client):
    files = [images.jpeg(61), images.jpeg(62)]
    payload = {
        "inputs": [
            {
                "name": "images",
                "datatype": "BYTES",
                "shape": [2, 1],
                "data": [base64.b64encode(f).decode() for f in files],
            }
        ]
    }
    response = client.post(INFER, json=payload)
    assert response.status_code == 200, response.text
    assert next(o for o in response.json()["outputs"] if o["name"] == "probabilities")["shape"] == [2, 4]


def test_classification_extension(client, expected):
    data = images.jpeg(63)
    payload = {
        "inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(data).decode()]}],
        "outputs": [{"name": "probabilities", "parameters": {"classification": 3}}],
    }
    response = client.post(INFER, json=payload)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["datatype"] == "BYTES" and output["shape"] == [1, 3]
    reference = expected(preprocess(data, CONFIG)[None])[0]
    order = np.argsort(-reference)[:3]
    parsed = [entry.split(":") for entry in output["data"]]
    assert [int(index) for _, index, _ in parsed] == order.tolist()
    assert [label for _, _, label in parsed] == [CLASSES[i] for i in order]
    assert np.allclose([float(value) for value, _, _ in parsed], reference[order], atol=1e-5)


def test_binary_outputs_for_all_with_the_request_parameter(client):
    batch = np.stack([images.mri_slice(9, size=16)])
    body, headers = binary_request(
        {
            "parameters": {"binary_data_output": True},
            "inputs": [
                {
                    "name": "images",
                    "datatype": "UINT8",
                    "shape": [1, 16, 16, 3],
                    "parameters": {"binary_data_size": batch.nbytes},
                }
            ],
        },
        batch.tobytes(),
    )
    response = client.post(INFER, content=body, headers=headers)
    answer, tail = split_answer(response)
    sizes = [o["parameters"]["binary_data_size"] for o in answer["outputs"]]
    assert sizes == [16, 1] and len(tail) == 17
    assert np.isclose(np.frombuffer(tail[:16], dtype="<f4").sum(), 1.0, atol=1e-4)


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        ({"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1], "data": [0]}]}, 422, "exactly one input"),
        ({"inputs": [{"name": "images", "datatype": "INT64", "shape": [1], "data": [0]}]}, 422, "unsupported datatype"),
        ({"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 8, 8], "data": [0]}]}, 422, "expected [N"),
        ({"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 8, 8, 3], "data": [0, 1]}]}, 422, "needs 192"),
        (
            {"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 8, 8, 3], "data": [300] * 192}]},
            422,
            "0, 255",
        ),
        (
            {"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 8, 8, 3], "data": ["x"] * 192}]},
            422,
            "numeric",
        ),
        ({"inputs": [{"name": "images", "datatype": "FP32", "shape": [99, 8, 8, 3], "data": [0]}]}, 413, "limit is 8"),
        ({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": ["%%%"]}]}, 422, "base64"),
        ({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": ["aGVsbG8="]}]}, 415, "not a JPEG"),
        ({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1]}]}, 422, "neither data"),
        ({"inputs": "images"}, 422, "invalid inference request: inputs"),
        (
            {
                "inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": ["aGVsbG8="]}],
                "outputs": [{"name": "logits"}],
            },
            422,
            "unknown output",
        ),
    ],
)
def test_bad_requests_get_a_4xx_in_the_protocol_shape(client, payload, status, message):
    response = client.post(INFER, json=payload)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"} and message in response.json()["error"]


def test_malformed_binary_framing_is_400(client):
    header = {
        "inputs": [
            {"name": "images", "datatype": "UINT8", "shape": [1, 8, 8, 3], "parameters": {"binary_data_size": 10}}
        ]
    }
    body, headers = binary_request(header, b"\0" * 192)
    assert client.post(INFER, content=body, headers=headers).status_code == 400
    body, headers = binary_request({"inputs": header["inputs"]}, b"")
    headers["Inference-Header-Content-Length"] = str(len(body) + 5)
    assert client.post(INFER, content=body, headers=headers).status_code == 400
    assert client.post(INFER, content=b"{not json", headers={"Content-Type": "application/json"}).status_code == 400
    tail = struct.pack("<I", 1000) + b"short"
    body, headers = binary_request(
        {
            "inputs": [
                {"name": "images", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(tail)}}
            ]
        },
        tail,
    )
    response = client.post(INFER, content=body, headers=headers)
    assert response.status_code == 400 and response.json() == {"error": "truncated BYTES tensor data"}
