"""The non-MRI / unsure warning: the statistics, thresholds from metadata or settings, and the routes' fields."""

from __future__ import annotations

import base64
import json
import shutil

import numpy as np
import pytest

from service.checks import input_check
from service.inference.classifier import Classifier
from tests.service import images
from tests.service.conftest import MODEL_NAME, make_settings
from tests.synthetic import mri_like


def _photo(seed: int = 0, size: int = 64) -> np.ndarray:
    """A colourful 'photo': smooth colour gradients and blobs filling the frame."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    channels = [128 + 100 * np.sin(rng.uniform(2, 8) * xx + rng.uniform(2, 8) * yy + rng.uniform(0, 6)) for _ in "rgb"]
    return np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8)


def _document(size: int = 64) -> np.ndarray:
    """Black text lines on white paper."""
    page = np.full((size, size), 245, np.uint8)
    for row in range(6, size - 6, 6):
        page[row : row + 2, 5 : size - 8] = 20
    return np.repeat(page[:, :, None], 3, axis=2)


def test_statistics():
    mri = mri_like(1, np.random.default_rng(0), 64)[None]
    assert input_check.colour_spread(mri)[0] == 0.0
    assert input_check.colour_spread(_photo()[None])[0] > 0.2
    assert input_check.border_brightness(mri)[0] < 0.05
    assert input_check.border_brightness(_document()[None])[0] > 0.8
    frame = np.zeros((1, 32, 32, 3), np.uint8)
    frame[:, :2], frame[:, -2:], frame[:, :, :2], frame[:, :, -2:] = 255, 255, 255, 255
    assert input_check.border_brightness(frame)[0] == pytest.approx(1.0)


def test_checks_and_combined_score():
    batch = np.stack(
        [mri_like(1, np.random.default_rng(0), 64), _photo(), _document(), mri_like(2, np.random.default_rng(3), 64)]
    )
    probs = np.array([[0.9, 0.05, 0.03, 0.02]] * 3 + [[0.3, 0.3, 0.2, 0.2]])
    checks = input_check.check(batch, probs, input_check.Thresholds())
    assert [c.reasons for c in checks] == [
        (),
        ("colour_image", "bright_background"),
        ("bright_background",),
        ("low_confidence",),
    ]
    assert [c.warning for c in checks] == [False, True, True, True]
    assert [c.likely_mri for c in checks] == [True, False, False, True]
    assert all((c.score > 1) == c.warning for c in checks)
    shown = checks[1].to_dict()
    assert shown["warning"] is True and shown["message"].startswith(input_check.MESSAGES["colour_image"])


def test_thresholds_from_metadata_else_settings(model_root):
    settings = make_settings(model_root, ood_min_confidence=0.7)
    assert input_check.thresholds({}, settings) == input_check.Thresholds(0.05, 0.35, 0.7)
    section = {"ood": {"max_colour_spread": 0.02, "min_confidence": 0.4, "auroc": 0.99}}
    got = input_check.thresholds(section, settings)
    assert (got.max_colour_spread, got.max_border_brightness, got.min_confidence) == (0.02, 0.35, 0.4)
    assert got.source == "metadata"
    assert input_check.thresholds({"ood": {"min_confidence": "high"}}, settings).min_confidence == 0.7


def test_predict_flags_a_photo_and_a_document(client):
    files = [
        ("files", ("mri.jpg", images.jpeg(3), "image/jpeg")),
        ("files", ("photo.png", images.encode(_photo(), "PNG"), "image/png")),
        ("files", ("doc.png", images.encode(_document(), "PNG"), "image/png")),
    ]
    predictions = client.post("/predict", files=files).json()["predictions"]
    mri, photo, document = (p["check"] for p in predictions)
    assert mri["likely_mri"] is True
    assert photo["likely_mri"] is False and "colour_image" in photo["reasons"] and photo["warning"] is True
    assert document["likely_mri"] is False and "bright_background" in document["reasons"]


def test_invocations_keeps_the_tfserving_format_and_adds_checks(client):
    response = client.post(
        "/invocations", content=images.encode(_photo(), "PNG"), headers={"Content-Type": "image/png"}
    )
    body = response.json()
    assert set(body) == {"predictions", "checks"}
    assert len(body["predictions"]) == len(body["checks"]) == 1 and len(body["predictions"][0]) == 4
    assert body["checks"][0]["likely_mri"] is False
    instances = {"instances": [{"b64": base64.b64encode(images.jpeg(4)).decode()}]}
    assert set(client.post("/invocations", json=instances).json()) == {"predictions", "checks"}
    # the TF Serving route itself keeps the strict format
    assert set(client.post(f"/v1/models/{MODEL_NAME}:predict", json=instances).json()) == {"predictions"}


def test_calibrated_thresholds_in_metadata_are_used(open_client, model_root, tmp_path):
    root = tmp_path / MODEL_NAME
    shutil.copytree(model_root / "1", root / "1")
    meta_path = root / "1" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["ood"] = {"max_colour_spread": 0.05, "max_border_brightness": 0.35, "min_confidence": 0.9999}
    meta_path.write_text(json.dumps(meta))
    classifier = Classifier(make_settings(root))
    assert classifier.load(), classifier.reason
    client = open_client(make_settings(root), classifier)
    check = client.post("/predict", files={"file": ("a.jpg", images.jpeg(5), "image/jpeg")}).json()
    assert check["predictions"][0]["check"]["reasons"] == ["low_confidence"]
