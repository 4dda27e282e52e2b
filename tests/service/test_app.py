"""The assembled app: dynamic batching under concurrent requests, backpressure, the 500 path, the OpenAPI page."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from service import mime
from service.imaging.preprocessing import PreprocessConfig, preprocess
from tests.service import images
from tests.service.conftest import IMAGE_SIZE, make_settings
from tests.service.held import Hold, held_classifier

CONFIG = PreprocessConfig(image_size=IMAGE_SIZE)


def test_concurrent_requests_are_batched_and_answered_to_the_right_request(
    open_client, model_root, tf_classifier, expected
):
    hold = Hold(delay=0.05)
    client = open_client(
        make_settings(model_root, max_batch_size=4, max_wait_ms=20), held_classifier(tf_classifier, hold)
    )
    blobs = [images.jpeg(seed, cls=seed % 4) for seed in range(100, 116)]
    reference = expected(np.stack([preprocess(b, CONFIG) for b in blobs]))
    assert set(np.argmax(reference, axis=1)) == {0, 1, 2, 3}  # different images, different known answers

    def ask(index: int) -> np.ndarray:
        response = client.post("/predict", files={"file": ("x.jpg", blobs[index], "image/jpeg")})
        assert response.status_code == 200, response.text
        probs = response.json()["predictions"][0]["probabilities"]
        return np.array(list(probs.values()))

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(ask, range(len(blobs))))
    for index, answer in enumerate(answers):
        assert np.allclose(answer, reference[index], atol=1e-5), index
    assert sum(hold.batches) == len(blobs)
    assert max(hold.batches) > 1, hold.batches
    assert max(hold.batches) <= 4


def test_full_queue_answers_503_with_retry_after_at_once(open_client, model_root, tf_classifier):
    hold = Hold()
    hold.release.clear()
    settings = make_settings(model_root, max_batch_size=1, max_queue_size=2, max_images_per_request=1, retry_after_s=3)
    client = open_client(settings, held_classifier(tf_classifier, hold))
    batcher = client.app.state.batcher
    jpeg = images.jpeg(1)

    def ask() -> int:
        return client.post("/predict", files={"file": ("x.jpg", jpeg, "image/jpeg")}).status_code

    with ThreadPoolExecutor(max_workers=3) as pool:
        first = pool.submit(ask)
        assert hold.entered.wait(30)  # the worker holds request 1
        queued = [pool.submit(ask), pool.submit(ask)]
        deadline = time.monotonic() + 30
        while batcher.depth < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        response = client.post("/predict", files={"file": ("x.jpg", jpeg, "image/jpeg")})
        assert time.monotonic() - started < 5
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "3"
        assert response.json() == {"error": "server busy: the inference queue is full; retry later"}
        hold.release.set()
        assert first.result(30) == 200
        assert [f.result(30) for f in queued] == [200, 200]
    assert ask() == 200  # and the service keeps serving
    rejected = [line for line in client.get("/metrics").text.splitlines() if line.startswith("mri_rejected_total")]
    assert rejected and float(rejected[0].split()[-1]) >= 1


def test_unexpected_errors_are_500_with_a_safe_body(open_client, model_root, tf_classifier, caplog):
    failing = held_classifier(tf_classifier, Hold(failure="CUDA exploded at /opt/ml/model/1/variables"))
    client = open_client(make_settings(model_root), failing, raise_server_exceptions=False)
    response = client.post("/predict", files={"file": ("x.jpg", images.jpeg(1), "image/jpeg")})
    assert response.status_code == 500
    assert response.json() == {"error": "internal server error"}
    assert "CUDA exploded" in caplog.text  # the traceback goes to the log, not to the client
    assert client.get("/healthz").status_code == 200


def test_openapi_documents_the_routes(client):
    schema = client.get("/openapi.json").json()
    predict = schema["paths"]["/predict"]["post"]
    assert "multipart/form-data" in predict["requestBody"]["content"]
    assert "file" in predict["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert {"/healthz", "/readyz", "/metrics", "/ping", "/invocations", "/v1/models/{name}:predict"} <= set(
        schema["paths"]
    )
    assert "examples" in schema["components"]["schemas"]["PredictResponse"]
    for path in ("/predict", "/explain", "/invocations"):
        documented = set(schema["paths"][path]["post"]["requestBody"]["content"])
        assert documented >= mime.IMAGE_BODY_TYPES, path  # every raw image body the routes accept
    assert client.get("/docs").status_code == 200
