"""The CPU runtimes against TensorFlow on MRI-like images: same argmax, probabilities within the precision's
tolerance (1e-4 in f32; bf16, OpenVINO's default on CPUs with AVX512-BF16/AMX, within 0.03); which runtime
``auto`` picks and why (from probed facts, so that the GPU cases need no GPU); the GPU memory policy."""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from pydantic import ValidationError

import service.inference.runtime as runtime_module
from service.config import Settings
from service.imaging.preprocessing import PreprocessConfig, preprocess
from service.inference.classifier import Classifier
from service.inference.runtime import (
    GpuFacts,
    GpuMemoryPolicy,
    ModelLoadError,
    RuntimeChoice,
    choose_runtime,
    inference_streams,
    load_runtime,
)
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


CPU_BUILD = GpuFacts(driver=True, tensorflow="tensorflow-cpu", cuda_build=False)


@pytest.mark.parametrize(
    ("facts", "runtime", "reason"),
    [
        (
            GpuFacts(driver=True, tensorflow="tensorflow", cuda_build=True, gpus=2, cuda_version="12.5.1"),
            "tensorflow",
            "tensorflow on GPU: tensorflow (CUDA 12.5.1) sees 2 GPU(s)",
        ),
        # the issue's case: a driver on the machine, but the venv and the CPU image install tensorflow-cpu
        (CPU_BUILD, "openvino", "openvino on CPU: tensorflow-cpu has no CUDA build"),
        (
            GpuFacts(driver=False, tensorflow="tensorflow-cpu", cuda_build=False),
            "openvino",
            "openvino on CPU: no NVIDIA GPU visible; tensorflow-cpu has no CUDA build",
        ),
        # the GPU image on a machine without a GPU (make image-test): TensorFlow is not even imported
        (
            GpuFacts(driver=False, tensorflow="tensorflow", cuda_build=None),
            "openvino",
            "openvino on CPU: no NVIDIA GPU visible",
        ),
        # a driver, a CUDA build, but no device it can open (CUDA wheels missing, a driver too old)
        (
            GpuFacts(driver=True, tensorflow="tensorflow", cuda_build=True, gpus=0),
            "openvino",
            "openvino on CPU: tensorflow sees no GPU (CUDA libraries or driver not usable)",
        ),
        # TensorFlow's own build without CUDA (macOS, some aarch64 wheels) next to a driver
        (GpuFacts(driver=True, tensorflow="tensorflow", cuda_build=False), "openvino", "tensorflow has no CUDA build"),
        (
            GpuFacts(driver=False, tensorflow="tensorflow-cpu", cuda_build=False, openvino=False),
            "tensorflow",
            "tensorflow on CPU: no NVIDIA GPU visible; tensorflow-cpu has no CUDA build; OpenVINO is not installed",
        ),
    ],
)
def test_auto_takes_tensorflow_only_where_it_can_use_a_gpu(facts, runtime, reason):
    choice = choose_runtime("auto", facts)
    assert choice.runtime == runtime
    assert choice.reason.endswith(reason)


def test_a_configured_runtime_is_taken_as_is():
    assert choose_runtime("tensorflow", None) == RuntimeChoice("tensorflow", "MRI_RUNTIME=tensorflow")
    assert choose_runtime("onnxruntime", CPU_BUILD) == RuntimeChoice("onnxruntime", "MRI_RUNTIME=onnxruntime")
    with pytest.raises(ValueError, match="probed facts"):
        choose_runtime("auto", None)


def test_the_probe_reads_this_machine_without_importing_tensorflow_needlessly():
    """This environment's facts, as the probe sees them: the installed TensorFlow distribution by name; with
    tensorflow-cpu (the development and CPU locks on x86-64) no import is needed to know there is no CUDA."""
    facts = runtime_module.probe_gpu()
    assert facts.tensorflow == runtime_module.installed_tensorflow() in ("tensorflow-cpu", "tensorflow")
    assert facts.driver == runtime_module.nvidia_gpu_visible()
    if facts.tensorflow == "tensorflow-cpu":
        assert facts.cuda_build is False and facts.gpus == 0
    choice = runtime_module.runtime_choice("auto")
    assert choice == choose_runtime("auto", facts)
    if not (facts.cuda_build and facts.gpus):
        assert choice.runtime == "openvino" and choice.reason.startswith("openvino on CPU: ")


def test_readyz_and_the_load_log_say_which_runtime_and_why(model_root, open_client, caplog):
    """auto on this machine (no usable GPU here): OpenVINO, and /readyz and the load log line give the reason."""
    expected = runtime_module.runtime_choice("auto")
    with caplog.at_level(logging.INFO, logger="service.inference.classifier"):
        client = open_client(make_settings(model_root, runtime="auto"))
        body = _ready(client)
    assert body["model"]["runtime"] == expected.runtime
    assert body["model"]["runtime_reason"] == expected.reason
    assert body["model"]["device"].startswith("CPU")
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("serving "))
    assert line.endswith(f"runtime: {expected.reason}") and f" on {expected.runtime} (CPU" in line
    configured = _ready(open_client(make_settings(model_root)))  # runtime="tensorflow", as set
    assert configured["model"]["runtime_reason"] == "MRI_RUNTIME=tensorflow"


def _ready(client, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get("/readyz").json()
        if body["status"] in ("ready", "failed"):
            assert body["status"] == "ready", body
            return body
        time.sleep(0.05)
    raise AssertionError(f"not ready after {timeout} s")


@pytest.mark.parametrize(
    ("growth", "limit", "policy", "environment", "described"),
    [
        (True, 0, GpuMemoryPolicy(True, None), {}, "memory growth"),
        (False, 0, GpuMemoryPolicy(False, None), {}, "the whole GPU memory at start"),
        (
            True,
            4096,
            GpuMemoryPolicy(True, 4096),
            {"TF_FORCE_GPU_ALLOW_GROWTH": "true"},
            "memory growth up to 4096 MiB",
        ),
        (False, 4096, GpuMemoryPolicy(False, 4096), {}, "4096 MiB reserved at start"),
    ],
)
def test_gpu_memory_policy_follows_the_two_settings(model_root, growth, limit, policy, environment, described):
    settings = make_settings(model_root, gpu_memory_growth=growth, gpu_memory_limit_mb=limit)
    assert GpuMemoryPolicy.from_settings(settings) == policy
    assert policy.environment == environment
    assert policy.describe() == described


def test_growth_is_on_by_default_with_no_limit(monkeypatch):
    monkeypatch.delenv("MRI_GPU_MEMORY_GROWTH", raising=False)
    monkeypatch.delenv("MRI_GPU_MEMORY_LIMIT_MB", raising=False)
    assert GpuMemoryPolicy.from_settings(Settings(_env_file=None)) == GpuMemoryPolicy(True, None)


class _RecordingConfig:
    """``tf.config``'s memory calls, recorded (no GPU on the machines the tests run on)."""

    LogicalDeviceConfiguration = staticmethod(lambda memory_limit: ("logical", memory_limit))

    def __init__(self) -> None:
        self.calls: list[tuple[str, object, object]] = []
        self.experimental = self

    def set_memory_growth(self, gpu, enable) -> None:
        self.calls.append(("growth", gpu, enable))

    def set_logical_device_configuration(self, gpu, devices) -> None:
        self.calls.append(("logical", gpu, devices))


@pytest.mark.parametrize(
    ("policy", "calls"),
    [
        (GpuMemoryPolicy(True, None), [("growth", "gpu0", True), ("growth", "gpu1", True)]),
        (GpuMemoryPolicy(False, None), [("growth", "gpu0", False), ("growth", "gpu1", False)]),
        (
            GpuMemoryPolicy(True, 2048),
            [("logical", "gpu0", [("logical", 2048)]), ("logical", "gpu1", [("logical", 2048)])],
        ),
    ],
)
def test_gpu_memory_policy_configures_every_gpu(monkeypatch, policy, calls):
    monkeypatch.setenv("TF_FORCE_GPU_ALLOW_GROWTH", "")  # restored (unset) after the test, whatever apply sets
    monkeypatch.delenv("TF_FORCE_GPU_ALLOW_GROWTH")
    config = _RecordingConfig()
    policy.apply(type("tf", (), {"config": config}), ["gpu0", "gpu1"])
    assert config.calls == calls
    assert os.environ.get("TF_FORCE_GPU_ALLOW_GROWTH") == policy.environment.get("TF_FORCE_GPU_ALLOW_GROWTH")


@pytest.mark.parametrize(
    ("forced", "growth", "refused"),
    [
        ("true", "false", True),
        ("false", "true", True),
        ("yes", "true", True),
        ("true", "true", False),
        ("False", "false", False),
    ],
)
def test_tensorflow_growth_variable_never_wins_silently(monkeypatch, forced, growth, refused):
    """TF_FORCE_GPU_ALLOW_GROWTH overrides what the service configures inside TensorFlow: one that disagrees with
    MRI_GPU_MEMORY_GROWTH stops the service at start with a reason."""
    monkeypatch.setenv("TF_FORCE_GPU_ALLOW_GROWTH", forced)
    monkeypatch.setenv("MRI_GPU_MEMORY_GROWTH", growth)
    if refused:
        with pytest.raises(ValidationError, match=r"TF_FORCE_GPU_ALLOW_GROWTH=.* contradicts MRI_GPU_MEMORY_GROWTH"):
            Settings(_env_file=None)
    else:
        assert Settings(_env_file=None).gpu_memory_growth is (growth == "true")


def test_missing_runtime_is_a_load_error(monkeypatch, model_root):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ModelLoadError, match="runtime openvino is not installed"):
        load_runtime("openvino", model_root / "1", make_settings(model_root))


def test_streams_auto_is_two_for_openvino_on_two_cpus(monkeypatch, model_root):
    monkeypatch.setattr(runtime_module, "probe_gpu", lambda: CPU_BUILD)
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
