"""The SageMaker contract in process: /ping and /invocations with every content type and the TF client's JSON."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from service.imaging.preprocessing import PreprocessConfig, preprocess, to_model_input
from tests.service import images
from tests.service.conftest import IMAGE_SIZE

CONFIG = PreprocessConfig(image_size=IMAGE_SIZE)
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


def test_ping_is_ready(client):
    response = client.get("/ping")
    assert response.status_code == 200
    assert response.json()["status"] == "ready"


@pytest.mark.parametrize("content_type", ["image/jpeg", "image/png", "application/x-image", "application/octet-stream"])
def test_image_bodies(client, expected, content_type):
    data = images.jpeg(20) if content_type != "image/png" else images.png_variants(21)["rgb"]
    response = client.post("/invocations", content=data, headers={"Content-Type": content_type})
    assert response.status_code == 200, response.text
    predictions = np.array(response.json()["predictions"])
    assert predictions.shape == (1, 4)
    assert np.allclose(predictions, expected(images.reference_input(data, IMAGE_SIZE)[None]), atol=1e-5)


def test_sagemaker_tensorflow_client_json(client, expected):
    """``predictor.predict({"instances": numpy_batch.tolist()})`` of raw H x W x 3 pixels, unchanged."""
    batch = np.stack([images.mri_slice(seed, size=48, width=40) for seed in (30, 31, 32)])
    response = client.post("/invocations", json={"instances": batch.tolist()}, headers=JSON_HEADERS)
    assert response.status_code == 200, response.text
    reference = expected(np.stack([to_model_input(image, CONFIG) for image in batch]))
    assert np.allclose(np.array(response.json()["predictions"]), reference, atol=1e-5)


def test_pixel_arrays_are_preprocessed_like_files(client):
    """A PNG upload and the same pixels as a JSON array give the same answer (same resize and padding)."""
    rgb = images.mri_slice(33, size=80, width=60)
    from_file = client.post("/invocations", content=images.encode(rgb, "PNG"), headers={"Content-Type": "image/png"})
    from_json = client.post("/invocations", json={"instances": [rgb.tolist()]}, headers=JSON_HEADERS)
    assert np.allclose(from_file.json()["predictions"], from_json.json()["predictions"], atol=1e-6)


def test_b64_instances(client, expected):
    blobs = [images.jpeg(40), images.png_variants(41)["gray16"], images.dicom(42)]
    instances = [{"b64": base64.b64encode(b).decode()} for b in blobs]
    response = client.post("/invocations", json={"instances": instances}, headers=JSON_HEADERS)
    assert response.status_code == 200, response.text
    reference = expected(np.stack([preprocess(b, CONFIG) for b in blobs]))
    assert np.allclose(np.array(response.json()["predictions"]), reference, atol=1e-5)


def test_named_input_and_columnar_inputs(client):
    rgb = images.mri_slice(43, size=40)
    row = client.post("/invocations", json={"instances": [{"images": rgb.tolist()}]}, headers=JSON_HEADERS)
    columnar = client.post("/invocations", json={"inputs": [rgb.tolist()]}, headers=JSON_HEADERS)
    assert row.status_code == columnar.status_code == 200
    assert np.allclose(row.json()["predictions"], columnar.json()["outputs"])


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"instances": [[[1, 2], [3, 4]]]}, "instance 0 has shape [2, 2]; expected [height, width, 3]"),
        ({"instances": [np.zeros((8, 8, 4)).tolist()]}, "instance 0 has shape [8, 8, 4]; expected [height, width, 3]"),
        ({"instances": [np.full((8, 8, 3), 300).tolist()]}, "instance 0 has pixel values outside [0, 255]"),
        ({"instances": [np.full((8, 8, 3), -1).tolist()]}, "instance 0 has pixel values outside [0, 255]"),
        ({"instances": [[[["a", "b", "c"]]]]}, "instance 0 is not a numeric array"),
        ({"instances": [[[[1, 2, 3]], [[1, 2]]]]}, "instance 0 is not a numeric array"),
        ({"instances": [{"b64": "%%%not base64%%%"}]}, "instance 0 is not valid base64"),
        ({"instances": [{"png": "abc"}]}, 'instance 0 must be {"b64": "<base64 image>"} or a pixel array'),
        ({"instances": []}, "instances must be a non-empty list"),
        ({"instances": [[[[0, 0, 0]]]], "inputs": [[[[0, 0, 0]]]]}, 'send exactly one of "instances" or "inputs"'),
        ({"data": 1}, 'send exactly one of "instances" or "inputs"'),
        ([1, 2, 3], 'expected a JSON object with "instances" or "inputs"'),
        (
            {"signature_name": "gradcam", "instances": [[[[0, 0, 0]]]]},
            "unknown signature_name; this endpoint serves serving_default",
        ),
    ],
)
def test_malformed_instances_are_422(client, payload, error):
    response = client.post("/invocations", json=payload, headers=JSON_HEADERS)
    assert response.status_code == 422
    assert response.json() == {"error": error}


def test_b64_of_a_bad_image_is_400(client):
    payload = {"instances": [{"b64": base64.b64encode(images.jpeg(1)[:200]).decode()}]}
    response = client.post("/invocations", json=payload, headers=JSON_HEADERS)
    assert response.status_code == 400
    assert response.json() == {"error": "could not decode the JPEG image (corrupt or truncated)"}


def test_invalid_json_is_400(client):
    response = client.post("/invocations", content=b'{"instances": [', headers=JSON_HEADERS)
    assert response.status_code == 400
    assert response.json() == {"error": "malformed JSON body"}


def test_unsupported_content_type_is_415(client):
    response = client.post("/invocations", content=b"1,2,3\n", headers={"Content-Type": "text/csv"})
    assert response.status_code == 415
    assert response.json()["error"].startswith("unsupported content type text/csv; send one of")


@pytest.mark.parametrize("accept", ["text/csv", "application/x-npy", "application/json;q=0, text/plain"])
def test_accept_other_than_json_is_406(client, accept):
    response = client.post(
        "/invocations", content=images.jpeg(1), headers={"Content-Type": "image/jpeg", "Accept": accept}
    )
    assert response.status_code == 406
    assert response.json() == {"error": "this endpoint answers application/json only"}


@pytest.mark.parametrize("accept", ["application/json", "*/*", "application/*", "text/csv, application/json;q=0.5"])
def test_accept_admitting_json(client, expected, accept):
    response = client.post(
        "/invocations", content=images.jpeg(1), headers={"Content-Type": "image/jpeg", "Accept": accept}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    reference = expected(images.reference_input(images.jpeg(1), IMAGE_SIZE)[None])
    assert np.allclose(response.json()["predictions"], reference, atol=1e-5)


def test_custom_attributes_header_is_tolerated(client):
    headers = {"Content-Type": "image/jpeg", "X-Amzn-SageMaker-Custom-Attributes": "trace=abc"}
    plain = client.post("/invocations", content=images.jpeg(1), headers={"Content-Type": "image/jpeg"})
    tagged = client.post("/invocations", content=images.jpeg(1), headers=headers)
    assert tagged.status_code == 200 and tagged.json() == plain.json()
