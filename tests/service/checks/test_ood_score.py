"""The model's "unlike the training images" score (``ood_score``): exported by the tiny model fixture, larger
for images unlike its training slices, folded into every answer's check with its own reason, and absent
(but the model still served) for a model exported without it."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from service.checks import input_check
from service.imaging.preprocessing import PreprocessConfig, to_model_input
from service.inference.classifier import Classifier
from tests.service import images
from tests.service.checks.test_input_check import _document, _photo
from tests.service.conftest import IMAGE_SIZE, MODEL_NAME, make_settings

CONFIG = PreprocessConfig(image_size=IMAGE_SIZE)


def _inputs(arrays: list[np.ndarray]) -> np.ndarray:
    return np.stack([to_model_input(a, CONFIG) for a in arrays])


def _with_threshold(model_root: Path, tmp_path: Path, limit: float) -> Path:
    """A copy of the tiny model whose metadata sets the ood_score threshold to ``limit``."""
    root = tmp_path / MODEL_NAME
    shutil.copytree(model_root / "1", root / "1")
    meta_path = root / "1" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["ood"] = {"max_colour_spread": 0.05, "max_border_brightness": 0.35, "min_confidence": 0.0}
    meta["ood"]["max_ood_score"] = limit
    meta_path.write_text(json.dumps(meta))
    return root


def test_the_exported_model_declares_and_returns_the_score(model_root, tf_classifier):
    meta = json.loads((model_root / "1" / "metadata.json").read_text())
    assert meta["signatures"]["serving_default"]["outputs"] == ["probabilities", "ood_score"]
    assert meta["ood_score"]["k"] == 5 and meta["ood_score"]["bank_size"] == 192
    rows = tf_classifier.infer(_inputs([images.mri_slice(1, cls=c) for c in range(4)]))
    assert rows["ood_score"].shape == (4,) and np.isfinite(rows["ood_score"]).all()
    assert ((rows["ood_score"] > -1e-4) & (rows["ood_score"] < 2 + 1e-4)).all()  # 1 - cosine, up to rounding
    np.testing.assert_allclose(rows["probabilities"].sum(axis=1), 1.0, atol=1e-5)


def test_score_is_larger_for_images_unlike_the_training_slices(tf_classifier):
    rng = np.random.default_rng(3)
    familiar = [images.mri_slice(5000 + i, size=64, cls=i % 4) for i in range(24)]  # new slices, same kind
    unlike = [_photo(i) for i in range(8)] + [_document()]
    unlike += [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(8)]  # noise
    unlike += [np.full((64, 64, 3), v, np.uint8) for v in (40, 128, 250)]  # flat frames
    near = tf_classifier.infer(_inputs(familiar))["ood_score"]
    far = tf_classifier.infer(_inputs(unlike))["ood_score"]
    auroc = roc_auc_score([0] * len(near) + [1] * len(far), np.concatenate([near, far]))
    assert auroc >= 0.9, (near, far)
    assert np.median(far) > np.quantile(near, 0.9)


def test_answers_carry_the_unlike_training_reason(open_client, model_root, tmp_path):
    root = _with_threshold(model_root, tmp_path, limit=0.0)  # every image is "unlike" at 0
    classifier = Classifier(make_settings(root))
    assert classifier.load(), classifier.reason
    client = open_client(make_settings(root), classifier)
    check = client.post("/predict", files={"file": ("a.jpg", images.jpeg(5), "image/jpeg")}).json()
    check = check["predictions"][0]["check"]
    assert check["reasons"] == ["unlike_training"] and check["warning"] is True
    assert check["familiar"] is False and check["likely_mri"] is True and check["confident"] is True
    assert check["message"] == input_check.MESSAGES["unlike_training"] and "trained on" in check["message"]
    assert check["ood_score"] > 0 and check["score"] > 1
    body = client.post("/invocations", content=images.jpeg(6), headers={"Content-Type": "image/jpeg"}).json()
    assert body["checks"][0]["reasons"] == ["unlike_training"]
    instances = {"instances": [{"b64": base64.b64encode(images.jpeg(7)).decode()}]}
    assert client.post("/invocations", json=instances).json()["checks"][0]["familiar"] is False
    explained = client.post("/explain", files={"file": ("a.jpg", images.jpeg(8), "image/jpeg")}).json()
    assert explained["prediction"]["check"]["reasons"] == ["unlike_training"]


def test_a_generous_threshold_passes_the_training_like_slices(open_client, model_root, tmp_path):
    root = _with_threshold(model_root, tmp_path, limit=1.5)
    classifier = Classifier(make_settings(root))
    assert classifier.load(), classifier.reason
    client = open_client(make_settings(root), classifier)
    prediction = client.post("/predict", files={"file": ("a.jpg", images.jpeg(5), "image/jpeg")}).json()
    prediction = prediction["predictions"][0]
    check = prediction["check"]
    assert check["familiar"] is True and check["warning"] is False and 0 < check["score"] < 1
    # an MRI-like slice: the score is the model's part, max((1 - p) / (1 - 0), ood_score / 1.5)
    expected = max(1 - prediction["confidence"], check["ood_score"] / 1.5)
    assert check["score"] == pytest.approx(expected, abs=1e-3)


def test_a_model_without_the_output_is_still_served(open_client, legacy_root):
    meta = json.loads((legacy_root / "1" / "metadata.json").read_text())
    assert "ood_score" not in meta and meta["signatures"]["serving_default"]["outputs"] == ["probabilities"]
    for runtime in ("tensorflow", "openvino"):
        classifier = Classifier(make_settings(legacy_root, runtime=runtime))
        assert classifier.load(), classifier.reason
        assert np.isnan(classifier.infer(_inputs([images.mri_slice(1)]))["ood_score"]).all()
    client = open_client(make_settings(legacy_root), classifier)
    check = client.post("/predict", files={"file": ("a.jpg", images.jpeg(5), "image/jpeg")}).json()
    check = check["predictions"][0]["check"]
    assert check["ood_score"] is None and check["familiar"] is True


def test_check_folds_the_score_in_with_its_own_reason():
    batch = np.stack([images.mri_slice(i, size=64) for i in range(4)])
    probs = np.array([[0.9, 0.05, 0.03, 0.02]] * 4)
    thresholds = input_check.Thresholds(min_confidence=0.5, max_ood_score=0.4)
    checks = input_check.check(batch, probs, thresholds, np.array([0.1, 0.3, 0.5, np.nan]))
    assert [c.reasons for c in checks] == [(), (), ("unlike_training",), ()]
    assert [c.familiar for c in checks] == [True, True, False, True]
    assert checks[3].ood_score is None and checks[3].to_dict()["ood_score"] is None
    assert checks[0].score < checks[1].score < 1 < checks[2].score  # ranks answers by the score below 1
    assert checks[3].score == pytest.approx(0.1 / 0.5)  # no score: the confidence part alone
    # without a threshold (a model whose metadata has none) there is no such check
    assert [c.reasons for c in input_check.check(batch, probs, input_check.Thresholds(), np.array([5.0] * 4))] == [
        ()
    ] * 4
    # a failing image check still dominates, and the threshold comes from the metadata
    meta = {"ood": {"max_ood_score": 0.25, "min_confidence": 0.4}}
    assert input_check.Thresholds.from_metadata(meta, input_check.Thresholds()).max_ood_score == 0.25
    assert (
        input_check.Thresholds.from_metadata({"ood": {"max_ood_score": "x"}}, input_check.Thresholds()).max_ood_score
        is None
    )
