"""A hot reload while a request is in flight: the request is served end to end (decode, prediction, answer)
by the model version that admitted it, and says which; the next request gets the new version.

The swap is made to happen exactly between the route's decode and its prediction: the decode step of the
test's app swaps the classifier to another version. Version 2 is the same network served with flip
test-time augmentation, so its probabilities differ from version 1's on the asymmetric test image;
version 3 also expects another input size, so mixing it into version 1's batch cannot go unnoticed.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.imaging.preprocessing import preprocess
from service.inference.batching import Batcher
from service.inference.classifier import Classifier, LoadedModel
from service.protocols import codec, oip
from tests.service import images
from tests.service.conftest import make_settings


def other_version(model: LoadedModel, version: int, **preprocess_changes: Any) -> LoadedModel:
    info = dataclasses.replace(model.info, version=version, tta="flip")
    return dataclasses.replace(model, info=info, preprocess=dataclasses.replace(model.preprocess, **preprocess_changes))


def send(client: TestClient, route: str, data: bytes) -> tuple[int, list[float]]:
    """(model version named in the answer, probabilities of the one image) for each prediction route."""
    if route == "/predict":
        body = client.post(route, files={"file": ("a.jpg", data, "image/jpeg")}).json()
        return body["model_version"], list(body["predictions"][0]["probabilities"].values())
    if route == "/explain":
        body = client.post(route, files={"file": ("a.jpg", data, "image/jpeg")}).json()
        return body["model_version"], list(body["prediction"]["probabilities"].values())
    if route.startswith("/v2/"):
        tensor = {"name": "images", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(data).decode()]}
        body = client.post(route, json={"inputs": [tensor]}).json()
        (output,) = (o for o in body["outputs"] if o["name"] == "probabilities")
        return int(body["model_version"]), output["data"]
    if route == "/invocations":
        response = client.post(route, content=data, headers={"Content-Type": "image/jpeg"})
        return -1, response.json()["predictions"][0]
    response = client.post(route, json={"instances": [{"b64": base64.b64encode(data).decode()}]})
    return -1, response.json()["predictions"][0]


ROUTES = [
    "/predict",
    "/explain",
    "/invocations",
    "/v1/models/mri-classifier:predict",
    "/v2/models/mri-classifier/infer",
]


@pytest.mark.parametrize("route", ROUTES)
def test_a_request_is_served_by_the_version_that_admitted_it(
    open_client: Callable[..., TestClient], model_root: Path, tf_classifier: Classifier, monkeypatch, route: str
) -> None:
    v1 = tf_classifier.model
    v2 = other_version(v1, 2)
    classifier = Classifier(make_settings(model_root, model_poll_interval_s=0))
    classifier.use(v1)
    client = open_client(make_settings(model_root, model_poll_interval_s=0), classifier)
    data = images.jpeg(11, size=80)
    x = preprocess(data, v1.preprocess)[None]
    want_v1, want_v2 = v1.predict(x)[0], v2.predict(x)[0]
    assert np.abs(want_v1 - want_v2).max() > 1e-4, "the two versions must answer differently on this image"

    def then_reload(decode: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        def decode_then_reload(*args: Any, **kwargs: Any) -> np.ndarray:
            decoded = decode(*args, **kwargs)
            classifier.use(v2)  # the reload lands after this request was admitted and decoded
            return decoded

        return decode_then_reload

    with monkeypatch.context() as patch:
        for name in ("decode_files", "decode_instances"):
            patch.setattr(codec, name, then_reload(getattr(codec, name)))
        patch.setattr(oip, "decode", then_reload(oip.decode))
        version, probs = send(client, route, data)
    assert classifier.model is v2
    assert np.allclose(probs, want_v1, atol=1e-5), "answered with another version's probabilities"
    if version != -1:
        assert version == 1
    version, probs = send(client, route, data)
    assert np.allclose(probs, want_v2, atol=1e-5)
    if version != -1:
        assert version == 2


def test_one_batch_never_mixes_versions(tf_classifier: Classifier) -> None:
    """Images of two versions queued together: each is run by its own version (a mixed batch of two input
    sizes could not even be stacked: a 500 for everyone in it)."""
    v1 = tf_classifier.model
    v3 = other_version(v1, 3, image_size=48)
    small = preprocess(images.jpeg(12, size=80), v1.preprocess)[None]
    large = preprocess(images.jpeg(12, size=80), v3.preprocess)[None]
    batcher = Batcher(tf_classifier.infer, max_batch_size=8, max_wait_ms=50)
    batcher.start()

    async def both() -> list[np.ndarray]:
        async def one(model: LoadedModel, x: np.ndarray) -> np.ndarray:
            with batcher.reserve(1) as reservation:
                await asyncio.sleep(0.01)
                return await reservation.submit(x, model)

        return list(await asyncio.gather(one(v1, small), one(v3, large), one(v1, small)))

    try:
        got = asyncio.run(both())
    finally:
        batcher.stop()
    probs = [np.asarray(rows["probabilities"]) for rows in got]  # each request's rows from its own version
    assert np.allclose(probs[0], v1.predict(small), atol=1e-5)
    assert np.allclose(probs[2], v1.predict(small), atol=1e-5)
    assert np.allclose(probs[1], v3.predict(large), atol=1e-5)
