"""The CPU runtimes against TensorFlow on MRI-like images: same argmax, probabilities within the precision's
tolerance (1e-4 in f32; bf16, OpenVINO's default on CPUs with AVX512-BF16/AMX, within 0.03)."""

from __future__ import annotations

import importlib.util
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import service.runtime as runtime_module
from service.classifier import Classifier
from service.preprocessing import PreprocessConfig, preprocess
from service.runtime import ModelLoadError, inference_streams, load_runtime, resolve_runtime
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


def test_streams_auto_is_two_for_openvino_on_two_cpus(monkeypatch, model_root):
    monkeypatch.setattr(runtime_module, "nvidia_gpu_visible", lambda: False)
    monkeypatch.setattr(runtime_module, "usable_cpus", lambda: 2)
    assert inference_streams(make_settings(model_root, runtime="openvino")) == 2
    assert inference_streams(make_settings(model_root, runtime="auto")) == 2
    assert inference_streams(make_settings(model_root, runtime="tensorflow")) == 1
    assert inference_streams(make_settings(model_root, runtime="openvino", inference_streams=3)) == 3
    monkeypatch.setattr(runtime_module, "usable_cpus", lambda: 1)
    assert inference_streams(make_settings(model_root, runtime="openvino")) == 1


def test_openvino_takes_uint8_and_float_images_alike(model_root, scans):
    """The service feeds uint8 (converted inside the graph); float inputs, whole or not, take a float32
    compilation: the same numbers either way."""
    settings = make_settings(model_root, runtime="openvino", openvino_precision="f32", inference_streams=1)
    runtime = load_runtime("openvino", model_root / "1", settings)
    assert scans.dtype == np.uint8
    as_uint8, as_float = runtime.outputs(scans[:8]), runtime.outputs(scans[:8].astype(np.float32))
    for key in as_uint8:
        np.testing.assert_allclose(as_uint8[key], as_float[key], rtol=0, atol=1e-6)
    fractional = runtime.outputs(scans[:8].astype(np.float32) + 0.25)["probabilities"]
    assert fractional.shape == (8, 4) and np.isfinite(fractional).all()


class _GatedRequest:
    """An infer request that waits for ``release`` once it has started (``entered``)."""

    def __init__(self, request) -> None:
        self.request = request
        self.entered, self.release = threading.Event(), threading.Event()

    def infer(self, inputs):
        self.entered.set()
        assert self.release.wait(30)
        return self.request.infer(inputs)


def test_openvino_streams_answer_like_one_stream_alone_and_side_by_side(model_root, scans):
    """Two streams: a single image inferred alone takes the batch-1 latency compilation (every thread), a batch
    that starts while another runs (or holds several images) takes a stream's request; all answer as the
    single-stream runtime does (f32: to 1e-5)."""
    one = load_runtime("openvino", model_root / "1", make_settings(model_root, openvino_precision="f32"))
    two = load_runtime(
        "openvino", model_root / "1", make_settings(model_root, openvino_precision="f32", inference_streams=2)
    )
    assert two.streams == 2
    expected = one.outputs(scans[:16])["probabilities"]
    np.testing.assert_allclose(two.outputs(scans[:8])["probabilities"], expected[:8], rtol=0, atol=1e-5)
    gate = _GatedRequest(two._lone)
    two._lone = gate
    with ThreadPoolExecutor(1) as pool:
        alone = pool.submit(two.outputs, scans[:1])
        assert gate.entered.wait(30)
        side_by_side = [two.outputs(scans[i : i + 1])["probabilities"] for i in range(8, 12)]  # lone one is held
        side_by_side.append(two.outputs(scans[12:16])["probabilities"])
        gate.release.set()
        np.testing.assert_allclose(alone.result(30)["probabilities"], expected[:1], rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.concatenate(side_by_side), expected[8:16], rtol=0, atol=1e-5)


@pytest.mark.parametrize(("cpu_max", "limit"), [("200000 100000", 2), ("150000 100000", 2), ("50000 100000", 1)])
def test_usable_cpus_respects_the_cgroup_quota(tmp_path, cpu_max, limit):
    (tmp_path / "cpu.max").write_text(cpu_max + "\n")
    assert runtime_module.usable_cpus(tmp_path / "cpu.max") == min(limit, runtime_module.usable_cpus(tmp_path / "none"))
    (tmp_path / "unlimited").write_text("max 100000\n")
    assert runtime_module.usable_cpus(tmp_path / "unlimited") == runtime_module.usable_cpus(tmp_path / "none")


def test_warm_up_warms_the_path_requests_take(model_root):
    """Requests reach the runtime as uint8: warming up with them compiles no float32 model (memory, seconds)."""
    classifier = Classifier(make_settings(model_root, runtime="openvino"))
    assert classifier.load(), classifier.reason
    assert classifier.model.runtime._float is None
    classifier.model.runtime.outputs(np.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3), np.float32))
    assert classifier.model.runtime._float is not None
