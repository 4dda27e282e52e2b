"""The Open Inference Protocol (KServe V2) REST routes, in process: JSON and binary tensors, the classification
extension, and errors in the protocol's ``{"error": ...}`` shape. The real ``tritonclient`` against a real
server is ``tests/service/test_tritonclient.py``."""

from __future__ import annotations

import base64
import json
import struct

import numpy as np
import pytest

from service.imaging.preprocessing import PreprocessConfig, preprocess, to_model_input
from service.labels import CLASSES
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
    assert metadata["inputs"] == [  # one datatype per input, as the protocol describes them
        {"name": "images", "datatype": "FP32", "shape": [-1, -1, -1, 3]},
        {"name": "image_files", "datatype": "BYTES", "shape": [-1]},
    ]
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


def test_not_ready_is_400_on_the_ready_endpoints(open_client, model_root):
    """The protocol's health answers: 200 for true, a 4xx for false (400, as Triton answers); the service's own
    /readyz and SageMaker's /ping keep their 503, and metadata and inference stay 503 while not ready."""
    from service.inference.classifier import Classifier
    from tests.service.conftest import make_settings

    settings = make_settings(model_root / "missing")
    client = open_client(settings, Classifier(settings))
    assert client.get("/v2/health/live").status_code == 200
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 400 and ready.json() == {"ready": False}
    for path in (f"/v2/models/{MODEL_NAME}/ready", f"/v2/models/{MODEL_NAME}/versions/1/ready"):
        response = client.get(path)
        assert response.status_code == 400 and response.json()["error"].startswith("model not ready"), path
    assert client.get(f"/v2/models/{MODEL_NAME}").status_code == 503
    assert client.post(INFER, json={"inputs": []}).status_code == 503
    assert client.get("/readyz").status_code == 503 and client.get("/ping").status_code == 503


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


def test_image_files_input_and_bytes_under_images_answer_the_same(client, expected):
    """The metadata's second input, ``image_files`` (BYTES), and BYTES sent as ``images`` (accepted before that
    input existed) give the same probabilities as the file through the reference model."""
    data = images.jpeg(64)
    answers = []
    for name in ("image_files", "images"):
        tensor = {"name": name, "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(data).decode()]}
        response = client.post(INFER, json={"inputs": [tensor]})
        assert response.status_code == 200, response.text
        answers.append(next(o for o in response.json()["outputs"] if o["name"] == "probabilities")["data"])
    assert answers[0] == answers[1]
    assert np.allclose(answers[0], expected(preprocess(data, CONFIG)[None]).ravel(), atol=1e-5)


def test_large_nested_and_flat_json_pixels_answer_like_binary(client, expected):
    """JSON ``data`` converted in steps (nested or flat) gives the array the binary extension carries."""
    batch = np.stack([images.mri_slice(s, size=200, cls=s % 4) for s in (5, 6)])  # 240,000 values
    reference = expected(np.stack([to_model_input(image, CONFIG) for image in batch]))
    for data in (batch.tolist(), batch.ravel().tolist()):
        tensor = {"name": "images", "datatype": "UINT8", "shape": list(batch.shape), "data": data}
        response = client.post(INFER, json={"inputs": [tensor]})
        assert response.status_code == 200, response.text
        probs = next(o for o in response.json()["outputs"] if o["name"] == "probabilities")["data"]
        assert np.allclose(np.reshape(probs, (2, 4)), reference, atol=1e-5)


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
        ({"inputs": [{"name": "images", "datatype": "FP32", "shape": [1], "data": 5}]}, 422, "data must be a list"),
        (
            {"inputs": [{"name": "image_files", "datatype": "FP32", "shape": [1, 8, 8, 3], "data": [0] * 192}]},
            422,
            "holds BYTES",
        ),
        (
            {"inputs": [{"name": "images", "datatype": "FP32", "shape": [2, 8, 8, 3], "data": [[0] * 192, [0] * 3]}]},
            422,
            "numeric array",
        ),
        ({"inputs": [{"name": "images", "datatype": "X" * 5000, "shape": [1], "data": [0]}]}, 422, "XXX..."),
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


#: The Latin-1 superscripts (``str.isdigit`` true, ``int`` refuses them) reach the app intact only from a real
#: server: ``test_bad_input``'s live test sends them over a socket.
HEADER_CASES = {
    "superscript two": "²".encode("latin-1"),
    "negative": b"-5",
    "huge": b"9" * 5000,  # more digits than int() converts
    "not a number": b"twelve",
    "a decimal": b"1.5",
    "empty": b"",
    "zero": b"0",
    "beyond the body": b"100000",
    "superscripts one and three": "¹³".encode("latin-1"),
}


@pytest.mark.parametrize("value", list(HEADER_CASES.values()), ids=list(HEADER_CASES))
def test_a_bad_header_length_is_400_with_a_reason_and_no_traceback(client, caplog, value):
    body, headers = binary_request({"inputs": [{"name": "images", "datatype": "UINT8", "shape": [1, 8, 8, 3]}]}, b"")
    headers["Inference-Header-Content-Length"] = value  # type: ignore[assignment]
    response = client.post(INFER, content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json() == {"error": "Inference-Header-Content-Length must be a byte count within the body"}
    assert "Traceback" not in caplog.text and "unhandled" not in caplog.text


def test_the_protocol_headers_are_checked(client):
    batch = np.stack([images.mri_slice(9, size=16)])
    header = {
        "inputs": [
            {"name": "images", "datatype": "UINT8", "shape": [1, 16, 16, 3], "parameters": {"binary_data_size": 768}}
        ]
    }
    body, headers = binary_request(header, batch.tobytes())
    twice = [*headers.items(), ("Inference-Header-Content-Length", headers["Inference-Header-Content-Length"])]
    response = client.post(INFER, content=body, headers=twice)
    assert response.status_code == 400 and response.json() == {
        "error": "Inference-Header-Content-Length sent 2 times; send it once"
    }
    for encoding in ("gzip", "deflate", "identity, gzip"):
        response = client.post(INFER, content=body, headers={**headers, "Content-Encoding": encoding})
        assert response.status_code == 415, encoding
        assert response.json() == {"error": "Content-Encoding is not supported; send the body uncompressed"}
    assert client.post(INFER, content=body, headers={**headers, "Content-Encoding": "identity"}).status_code == 200
