"""Inference streams through the app: on the OpenVINO runtime with ``MRI_INFERENCE_STREAMS=2`` the app's batcher
has two workers, two batches are inferred side by side, and the answers are those of one request at a time.

Every other app test runs the TensorFlow runtime (one worker), so this is the test that sees the wiring of
``service.inference.runtime.inference_streams`` -> ``Batcher(workers=...)`` -> the runtime's streams.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from service.http.routes.rules import Body
from tests.reliability import routes
from tests.service import images
from tests.service.conftest import MODEL_NAME, make_settings

TF_PREDICT = f"/v1/models/{MODEL_NAME}:predict"


def wait_ready(client: Any, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, client.get("/readyz").json()
        time.sleep(0.1)


def post(client: Any, batch: np.ndarray) -> list[list[float]]:
    content = routes.json_pixels(Body.TFSERVING_JSON, batch)
    response = client.post(TF_PREDICT, content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    return routes.probabilities(response.json())


@pytest.mark.timeout(300)
def test_two_openvino_streams_infer_two_batches_at_once_and_answer_alike(open_client, model_root, monkeypatch):
    settings = make_settings(
        model_root, runtime="openvino", openvino_precision="f32", inference_streams=2, max_batch_size=1
    )
    client = open_client(settings)  # no classifier given: the app's lifespan loads the model on the runtime
    wait_ready(client)
    batcher = client.app.state.batcher
    model = client.app.state.classifier.model
    assert model.info.runtime == "openvino" and model.runtime.streams == 2
    assert batcher.workers == 2 and len({t.name for t in batcher._threads if t.is_alive()}) == 2

    scans = [np.stack([images.mri_slice(seed, size=40, cls=seed % 4)]) for seed in (21, 22, 23, 24)]
    one_at_a_time = [post(client, scan) for scan in scans]

    # Two batches must be inside the runtime together: each call waits at a barrier for the other one (with one
    # worker the second batch never starts, the barrier breaks and the requests fail).
    barrier = threading.Barrier(2, timeout=30)
    real_outputs = model.runtime.outputs
    inside = 0

    def side_by_side(images_in: np.ndarray) -> dict[str, np.ndarray]:
        nonlocal inside
        barrier.wait()
        inside += 1
        return real_outputs(images_in)

    monkeypatch.setattr(model.runtime, "outputs", side_by_side)
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(lambda scan: post(client, scan), scans))
    assert inside == 4
    np.testing.assert_allclose(np.array(together), np.array(one_at_a_time), atol=1e-5)
