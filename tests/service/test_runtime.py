"""The CPU runtimes against TensorFlow on MRI-like images: same argmax, probabilities within the precision's
tolerance (1e-4 in f32; bf16, OpenVINO's default on CPUs with AVX512-BF16/AMX, within 0.03)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import service.runtime as runtime_module
from service.classifier import Classifier
from service.preprocessing import PreprocessConfig, preprocess
from service.runtime import ModelLoadError, load_runtime, resolve_runtime
from tests.service import images
from tests.service.conftest import IMAGE_SIZE, make_settings

TOLERANCE = {"f32": 1e-4, "f16": 0.01, "bf16": 0.03}


@pytest.fixture(scope="module")
def scans() -> np.ndarray:
    """32 MRI-like slices of all four kinds, as JPEG files decoded by the service's own preprocessing."""
    config = PreprocessConfig(image_size=IMAGE_SIZE)
    return np.stack([preprocess(images.jpeg(500 + i, size=128, cls=i % 4), config) for i in range(32)])


def _compare(candidate: Classifier, reference: Classifier, scans: np.ndarray) -> None:
    """Same argmax, probabilities and ood_score (the model's "unlike the training images" output) within the
    precision's tolerance."""
    rows = reference.infer(scans)
    expected, expected_ood = rows["probabilities"], rows["ood_score"]
    got_rows = np.concatenate([candidate.infer(scans[i : i + 8]) for i in range(0, len(scans), 8)])
    got, got_ood = got_rows["probabilities"], got_rows["ood_score"]
    assert len(set(np.argmax(expected, axis=1))) == 4  # the comparison covers every class
    np.testing.assert_array_equal(np.argmax(got, axis=1), np.argmax(expected, axis=1))
    tolerance = TOLERANCE[candidate.model.info.precision]
    assert np.abs(got - expected).max() <= tolerance
    assert np.isfinite(expected_ood).all() and np.ptp(expected_ood) > 0  # exported, and differs per image
    assert np.abs(got_ood - expected_ood).max() <= tolerance


def test_openvino_default_precision_matches_tensorflow(ov_classifier, tf_classifier, scans):
    assert ov_classifier.model.info.runtime == "openvino"
    assert ov_classifier.model.info.precision in TOLERANCE
    _compare(ov_classifier, tf_classifier, scans)


def test_openvino_f32_hint_matches_tensorflow_to_1e4(model_root, tf_classifier, scans):
    classifier = Classifier(make_settings(model_root, runtime="openvino", openvino_precision="f32"))
    assert classifier.load(), classifier.reason
    assert classifier.model.info.precision == "f32"
    _compare(classifier, tf_classifier, scans)


@pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("tf2onnx") is None,
    reason="optional: onnxruntime and tf2onnx are not installed",
)
def test_onnxruntime_matches_tensorflow(model_root, tf_classifier, scans):
    classifier = Classifier(make_settings(model_root, runtime="onnxruntime"))
    assert classifier.load(), classifier.reason
    _compare(classifier, tf_classifier, scans)


def test_auto_picks_openvino_on_cpu_and_tensorflow_on_gpu(monkeypatch):
    monkeypatch.setattr(runtime_module, "nvidia_gpu_visible", lambda: False)
    assert resolve_runtime("auto") == "openvino"
    monkeypatch.setattr(runtime_module, "nvidia_gpu_visible", lambda: True)
    assert resolve_runtime("auto") == "tensorflow"
    assert resolve_runtime("onnxruntime") == "onnxruntime"


def test_missing_runtime_is_a_load_error(monkeypatch, model_root):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ModelLoadError, match="runtime openvino is not installed"):
        load_runtime("openvino", model_root / "1", make_settings(model_root))
