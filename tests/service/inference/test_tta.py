"""Test-time augmentation: the shared combinator with the real tiny model, and MRI_TTA=flip in the service."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from service.imaging.preprocessing import PreprocessConfig, preprocess
from service.inference.classifier import Classifier
from service.inference.tta import outputs_with_tta
from tests.service import images
from tests.service.conftest import IMAGE_SIZE, make_settings


def _asymmetric(n: int) -> np.ndarray:
    """Generated MRI-like slices with the left third darkened, so a mirror is a different input."""
    x = np.stack([preprocess(images.jpeg(seed), PreprocessConfig(image_size=IMAGE_SIZE)) for seed in range(n)])
    x = x.astype(np.float32)
    x[:, :, : IMAGE_SIZE // 3] *= 0.3
    return x


def test_none_is_the_plain_prediction(tf_classifier):
    x = _asymmetric(3)
    runtime = tf_classifier.model.runtime
    np.testing.assert_array_equal(outputs_with_tta(runtime.outputs, x, "none")["probabilities"], runtime.predict(x))


def test_flip_is_the_mean_of_image_and_mirror_in_one_call(tf_classifier):
    x = _asymmetric(3)
    runtime = tf_classifier.model.runtime
    plain, mirrored = runtime.predict(x), runtime.predict(x[:, :, ::-1].copy())
    assert not np.allclose(plain, mirrored, atol=1e-6), "the tiny model should see the mirror as another input"
    calls: list[int] = []

    def counting(batch: np.ndarray) -> dict[str, np.ndarray]:
        calls.append(len(batch))
        return runtime.outputs(batch)

    probs = outputs_with_tta(counting, x, "flip")["probabilities"]
    assert calls == [6]
    np.testing.assert_allclose(probs, (plain + mirrored) / 2, atol=1e-5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_unknown_mode_is_refused(tf_classifier):
    with pytest.raises(ValueError, match="rotate"):
        outputs_with_tta(tf_classifier.model.runtime.outputs, _asymmetric(1), "rotate")
    with pytest.raises(ValidationError):
        make_settings(tf_classifier.model.version_dir, tta="rotate")


def test_service_with_flip_tta_answers_the_mean_and_says_so(open_client, model_root, tf_classifier):
    settings = make_settings(model_root, tta="flip")
    classifier = Classifier(settings)
    assert classifier.load(), classifier.reason
    client = open_client(settings, classifier)
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["model"]["tta"] == "flip"
    data = images.jpeg(5)
    x = preprocess(data, PreprocessConfig(image_size=IMAGE_SIZE))[None]
    runtime = tf_classifier.model.runtime
    reference = (runtime.predict(x.astype(np.float32)) + runtime.predict(x[:, :, ::-1].astype(np.float32))) / 2
    response = client.post("/predict", files={"file": ("scan.jpg", data, "image/jpeg")})
    assert response.status_code == 200, response.text
    probs = response.json()["predictions"][0]["probabilities"]
    np.testing.assert_allclose(list(probs.values()), reference[0], atol=1e-5)
