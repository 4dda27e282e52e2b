"""Inference runtimes behind one small interface: TensorFlow, OpenVINO and ONNX Runtime.

Each runtime runs the exported SavedModel's ``serving_default`` signature: float32 images [N, S, S, 3] in
[0, 255] in, probabilities [N, 4] out. TensorFlow is the reference (and the runtime on a GPU); OpenVINO
converts the SavedModel at load time (no TensorFlow import needed) and is the fast CPU runtime; ONNX
Runtime uses ``model.onnx`` beside the SavedModel, or converts with tf2onnx at load time.

Frameworks are imported inside the loaders, so importing this module is cheap.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import queue
import threading
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from service.config import Settings

log = logging.getLogger(__name__)

SERVING_SIGNATURE = "serving_default"
INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
OOD_OUTPUT = "ood_score"
KNOWN_OUTPUTS = (OUTPUT_NAME, OOD_OUTPUT)
ONNX_FILE = "model.onnx"
RUNTIMES = ("tensorflow", "openvino", "onnxruntime")


class ModelLoadError(Exception):
    """A model that cannot be served; ``reason`` is short, safe to show on /readyz and holds no path."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Runtime(Protocol):
    """What the classifier needs from an inference engine. ``outputs`` returns the signature's outputs by name:
    ``probabilities`` always, ``ood_score`` for models exported with one (``training.ood_score``)."""

    name: str  # "tensorflow" | "openvino" | "onnxruntime"
    device: str  # e.g. "CPU" or "GPU:0 (NVIDIA H100)"
    precision: str  # "f32", "bf16", ...
    input_size: int | None  # the model's fixed input side, when the graph declares one

    def predict(self, images: np.ndarray) -> np.ndarray:
        """uint8 or float32 [N, S, S, 3] in [0, 255] -> float32 probabilities [N, num_classes]."""
        ...

    def outputs(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """uint8 or float32 [N, S, S, 3] in [0, 255] -> ``{"probabilities": [N, C], "ood_score": [N]}`` (the second
        only for models that export it)."""
        ...


def nvidia_gpu_visible() -> bool:
    """Cheap check for an NVIDIA driver, made without importing TensorFlow (which takes seconds)."""
    return Path("/proc/driver/nvidia/version").exists() or any(Path("/dev").glob("nvidia[0-9]*"))


@dataclass(frozen=True)
class GpuFacts:
    """What this process can learn about using a GPU with TensorFlow (``probe_gpu``)."""

    driver: bool  # an NVIDIA driver is visible (/proc/driver/nvidia, /dev/nvidia*)
    tensorflow: str | None  # the installed TensorFlow distribution ("tensorflow", "tensorflow-cpu"), or None
    cuda_build: bool | None  # TensorFlow was built with CUDA; None when not probed (TensorFlow not imported)
    gpus: int = 0  # GPU devices TensorFlow sees (probed only with a driver and a CUDA build)
    cuda_version: str | None = None  # the CUDA version TensorFlow was built with
    openvino: bool = True  # OpenVINO is installed


@dataclass(frozen=True)
class RuntimeChoice:
    """The runtime to load and why (shown in the load log line and on /readyz)."""

    runtime: str
    reason: str


def choose_runtime(requested: str, facts: GpuFacts | None) -> RuntimeChoice:
    """``auto`` -> TensorFlow only when it can use a GPU (a CUDA build that sees a device), else OpenVINO on the
    CPU (TensorFlow on the CPU when OpenVINO is missing); any other value is taken as configured. Pure: the
    facts come from ``probe_gpu``."""
    if requested != "auto":
        return RuntimeChoice(requested, f"MRI_RUNTIME={requested}")
    if facts is None:
        raise ValueError("choosing a runtime for auto needs the probed facts")
    if facts.cuda_build and facts.gpus:
        cuda = f" (CUDA {facts.cuda_version})" if facts.cuda_version else ""
        return RuntimeChoice("tensorflow", f"tensorflow on GPU: {facts.tensorflow}{cuda} sees {facts.gpus} GPU(s)")
    why = []
    if not facts.driver:
        why.append("no NVIDIA GPU visible")
    if facts.tensorflow is None:
        why.append("TensorFlow is not installed")
    elif facts.cuda_build is False:
        why.append(f"{facts.tensorflow} has no CUDA build")
    elif facts.driver and facts.cuda_build:
        why.append(f"{facts.tensorflow} sees no GPU (CUDA libraries or driver not usable)")
    if facts.openvino:
        return RuntimeChoice("openvino", f"openvino on CPU: {'; '.join(why)}")
    return RuntimeChoice("tensorflow", f"tensorflow on CPU: {'; '.join(why)}; OpenVINO is not installed")


def installed_tensorflow() -> str | None:
    """The installed TensorFlow distribution's name: tensorflow-cpu (no CUDA build) or tensorflow, or None."""
    for name in ("tensorflow-cpu", "tensorflow"):
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        return name
    return None


@functools.cache
def probe_gpu() -> GpuFacts:
    """The facts ``choose_runtime`` decides on, probed once per process. TensorFlow is imported only when a
    driver is visible and the installed TensorFlow is not tensorflow-cpu (listing devices does not initialise
    them: the memory policy can still be set)."""
    driver = nvidia_gpu_visible()
    dist = installed_tensorflow()
    openvino = importlib.util.find_spec("openvino") is not None
    if dist is None:
        return GpuFacts(driver, None, None, openvino=openvino)
    if dist == "tensorflow-cpu":
        return GpuFacts(driver, dist, False, openvino=openvino)
    if not driver:
        return GpuFacts(driver, dist, None, openvino=openvino)
    import tensorflow as tf

    build = tf.sysconfig.get_build_info()
    cuda_build = bool(build.get("is_cuda_build", False))
    gpus = len(tf.config.list_physical_devices("GPU")) if cuda_build else 0
    return GpuFacts(driver, dist, cuda_build, gpus, build.get("cuda_version"), openvino)


def runtime_choice(requested: str) -> RuntimeChoice:
    """``choose_runtime`` with this machine's facts (probed only for ``auto``)."""
    return choose_runtime(requested, probe_gpu() if requested == "auto" else None)


def resolve_runtime(requested: str) -> str:
    """The runtime ``requested`` resolves to on this machine (``auto``: see ``choose_runtime``)."""
    return runtime_choice(requested).runtime


@dataclass(frozen=True)
class GpuMemoryPolicy:
    """How TensorFlow takes GPU memory: ``growth`` (allocate as needed) and an optional cap per GPU in MiB.

    TensorFlow's Python API cannot combine growth with a cap (a logical device with a memory limit turns growth
    off); its allocator can, through ``TF_FORCE_GPU_ALLOW_GROWTH``, which ``environment`` then sets from the
    setting (``service.config`` refuses a value of it set by hand that disagrees)."""

    growth: bool
    limit_mb: int | None

    @classmethod
    def from_settings(cls, settings: Settings) -> GpuMemoryPolicy:
        return cls(settings.gpu_memory_growth, settings.gpu_memory_limit_mb or None)

    @property
    def environment(self) -> dict[str, str]:
        """Variables TensorFlow's allocator must see for this policy."""
        return {"TF_FORCE_GPU_ALLOW_GROWTH": "true"} if self.growth and self.limit_mb else {}

    def describe(self) -> str:
        if self.limit_mb is None:
            return "memory growth" if self.growth else "the whole GPU memory at start"
        if self.growth:
            return f"memory growth up to {self.limit_mb} MiB"
        return f"{self.limit_mb} MiB reserved at start"

    def apply(self, tf: Any, gpus: list[Any]) -> None:
        """Configure each of ``gpus`` (TensorFlow's physical devices) through ``tf.config``, before first use."""
        os.environ.update(self.environment)
        for gpu in gpus:
            if self.limit_mb is not None:
                limit = tf.config.LogicalDeviceConfiguration(memory_limit=self.limit_mb)
                tf.config.set_logical_device_configuration(gpu, [limit])
            else:
                tf.config.experimental.set_memory_growth(gpu, self.growth)


def usable_cpus(cgroup_cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """CPUs this process may use: its affinity mask (container CPU sets narrow it), and at most the cgroup's
    CPU quota rounded up (a Kubernetes CPU limit of 2 on a 64-core node is 2)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = cgroup_cpu_max.read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):  # no cgroup v2 CPU controller here
        pass
    return cpus


def inference_streams(settings: Settings) -> int:
    """How many batches to infer at once (``MRI_INFERENCE_STREAMS``; 0 = auto: 2 for OpenVINO on 2 or more CPUs,
    where single-threaded streams keep both cores busy without one inference's threads waiting on each other
    while the request path uses a core, else 1)."""
    if settings.inference_streams:
        return settings.inference_streams
    if resolve_runtime(settings.runtime) == "openvino" and usable_cpus() >= 2:
        return 2
    return 1


def _static_side(value: object) -> int | None:
    return int(value) if isinstance(value, int) and value > 0 else None


def _output_names(names: list[set[str]]) -> dict[str, int]:
    """Which output index holds each known output, given each output's tensor names (``probabilities``
    falls back to the first output for models exported before outputs were named)."""
    found = {known: i for known in KNOWN_OUTPUTS for i, aliases in enumerate(names) if known in aliases}
    found.setdefault(OUTPUT_NAME, 0)
    return found


class TensorFlowRuntime:
    """The SavedModel's signature run by TensorFlow (the reference numerics; on a GPU, with the memory policy
    of ``GpuMemoryPolicy``)."""

    name = "tensorflow"
    precision = "f32"

    def __init__(self, version_dir: Path, settings: Settings) -> None:
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        memory = GpuMemoryPolicy.from_settings(settings)
        try:
            memory.apply(tf, gpus)
            if settings.inference_threads:
                tf.config.threading.set_intra_op_parallelism_threads(settings.inference_threads)
        except RuntimeError:  # TensorFlow already initialised in this process (tests, a reload)
            log.debug("TensorFlow devices already initialised; keeping their configuration")
        self.device = "CPU"
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            self.device = f"GPU:0 ({details.get('device_name', 'unknown')})"
            log.info("TensorFlow on %d GPU(s): %s", len(gpus), memory.describe())
        self._tf = tf
        self.saved_model: Any = tf.saved_model.load(str(version_dir))
        try:
            self._fn = self.saved_model.signatures[SERVING_SIGNATURE]
        except KeyError:
            raise ModelLoadError(f"the SavedModel has no {SERVING_SIGNATURE} signature") from None
        inputs = list(self._fn.structured_input_signature[1])
        outputs = list(self._fn.structured_outputs)
        self._input = INPUT_NAME if INPUT_NAME in inputs else inputs[0]
        self._output = OUTPUT_NAME if OUTPUT_NAME in outputs else outputs[0]
        self._extra = [name for name in outputs if name == OOD_OUTPUT]
        shape = self._fn.structured_input_signature[1][self._input].shape
        self.input_size = _static_side(shape[1] if shape.rank == 4 else None)

    def outputs(self, images: np.ndarray) -> dict[str, np.ndarray]:
        result = self._fn(**{self._input: self._tf.constant(np.asarray(images, dtype=np.float32))})
        named = {OUTPUT_NAME: self._output, **{name: name for name in self._extra}}
        return {key: np.asarray(result[name].numpy(), dtype=np.float32) for key, name in named.items()}

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.outputs(images)[OUTPUT_NAME]


class OpenVINORuntime:
    """The SavedModel converted by OpenVINO at load time and compiled for the CPU: with one stream, the latency
    hint (every thread on each batch); with several, the throughput hint and one infer request per stream, so
    that the batcher's workers infer their batches side by side.

    The compiled model takes the uint8 images the service decodes (the conversion to float32 is the graph's
    first step, bit-identical to converting beforehand, and a quarter of the bytes to copy); float inputs go to
    a float32-input compilation made on first use.

    Precision: ``auto`` keeps the CPU plugin's default, which is bf16 on CPUs with AVX512-BF16 or AMX and
    f32 elsewhere; ``f32`` forces full precision. ``precision`` reports what the compiled model really uses.
    """

    name = "openvino"

    def __init__(self, version_dir: Path, settings: Settings) -> None:
        import openvino as ov
        from openvino.preprocess import PrePostProcessor

        self._core = core = ov.Core()
        self._model = ov.convert_model(str(version_dir))
        self.streams = inference_streams(settings)
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if self.streams > 1:
            config = {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": self.streams}
        if settings.openvino_precision != "auto":
            config["INFERENCE_PRECISION_HINT"] = settings.openvino_precision
        if settings.inference_threads:
            config["INFERENCE_NUM_THREADS"] = settings.inference_threads
        self._config = config
        uint8_input = PrePostProcessor(self._model.clone())
        uint8_input.input(0).tensor().set_element_type(ov.Type.u8)
        uint8_input.input(0).preprocess().convert_element_type(ov.Type.f32)
        uint8_model = uint8_input.build()
        compiled = core.compile_model(uint8_model, "CPU", config)
        self.precision = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        self.device = f"CPU ({core.get_property('CPU', 'FULL_DEVICE_NAME')})"
        self._outputs = _output_names([set(out.get_names()) for out in compiled.outputs])
        shape = compiled.input(0).get_partial_shape()
        self.input_size = _static_side(
            shape[1].get_length() if shape.rank.get_length() == 4 and shape[1].is_static else None
        )
        self._uint8 = self._pool(compiled)
        self._float: queue.SimpleQueue[Any] | None = None
        self._float_lock = threading.Lock()
        # With several streams, a single image inferred while nothing else is (a lone request on a quiet
        # service) takes a batch-1 latency compilation that uses every thread: it answers as fast as with one
        # stream, and its one fixed shape keeps its memory small.
        self._lone: Any = None
        if self.streams > 1:
            lone_config = {key: value for key, value in config.items() if key != "NUM_STREAMS"}
            lone_config["PERFORMANCE_HINT"] = "LATENCY"
            single = uint8_model.clone()
            single.reshape({0: ov.PartialShape([1, *list(single.input(0).get_partial_shape())[1:]])})
            self._lone = core.compile_model(single, "CPU", lone_config).create_infer_request()
        self._running = 0
        self._running_lock = threading.Lock()

    def _pool(self, compiled: Any) -> queue.SimpleQueue[Any]:
        requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for _ in range(self.streams):
            requests.put(compiled.create_infer_request())
        return requests

    def _float_requests(self) -> queue.SimpleQueue[Any]:
        with self._float_lock:
            if self._float is None:
                self._float = self._pool(self._core.compile_model(self._model, "CPU", self._config))
            return self._float

    def outputs(self, images: np.ndarray) -> dict[str, np.ndarray]:
        images = np.asarray(images)
        if images.dtype != np.uint8:
            return self._infer(self._float_requests(), np.ascontiguousarray(images, dtype=np.float32))
        with self._running_lock:
            alone = self._lone is not None and self._running == 0 and len(images) == 1
            self._running += 1
        try:
            if alone:
                return self._result(self._lone.infer({0: np.ascontiguousarray(images)}))
            return self._infer(self._uint8, np.ascontiguousarray(images))
        finally:
            with self._running_lock:
                self._running -= 1

    def _infer(self, requests: queue.SimpleQueue[Any], tensor: np.ndarray) -> dict[str, np.ndarray]:
        request = requests.get()  # a free stream's request (callers beyond the streams wait here)
        try:
            return self._result(request.infer({0: tensor}))
        finally:
            requests.put(request)

    def _result(self, result: Any) -> dict[str, np.ndarray]:
        return {key: np.array(result[i], dtype=np.float32) for key, i in self._outputs.items()}

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.outputs(images)[OUTPUT_NAME]


class OnnxRuntimeRuntime:
    """ONNX Runtime on the CPU: ``model.onnx`` in the version folder, else a tf2onnx conversion in memory."""

    name = "onnxruntime"
    precision = "f32"

    def __init__(self, version_dir: Path, settings: Settings) -> None:
        import onnxruntime as ort

        onnx_file = version_dir / ONNX_FILE
        model: bytes | str = str(onnx_file) if onnx_file.is_file() else self._convert(version_dir)
        options = ort.SessionOptions()
        if settings.inference_threads:
            options.intra_op_num_threads = settings.inference_threads
        self._session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        first = self._session.get_inputs()[0]
        self._input = first.name
        self._outputs = _output_names([{out.name} for out in self._session.get_outputs()])
        self.input_size = _static_side(first.shape[1] if len(first.shape) == 4 else None)
        self.device = "CPU"

    @staticmethod
    def _convert(version_dir: Path) -> bytes:
        if importlib.util.find_spec("tf2onnx") is None:
            raise ModelLoadError(f"no {ONNX_FILE} beside the SavedModel and tf2onnx is not installed")
        from tf2onnx import convert, tf_loader

        graph_def, inputs, outputs, renames = tf_loader.from_saved_model(
            str(version_dir), None, None, signatures=[SERVING_SIGNATURE], return_tensors_to_rename=True
        )
        proto, _ = convert.from_graph_def(
            graph_def, input_names=inputs, output_names=outputs, tensors_to_rename=renames, opset=17
        )
        return bytes(proto.SerializeToString())

    def outputs(self, images: np.ndarray) -> dict[str, np.ndarray]:
        result = self._session.run(None, {self._input: np.ascontiguousarray(images, dtype=np.float32)})
        return {key: np.asarray(result[i], dtype=np.float32) for key, i in self._outputs.items()}

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.outputs(images)[OUTPUT_NAME]


def load_runtime(kind: str, version_dir: Path, settings: Settings) -> Runtime:
    """Load ``version_dir`` with the runtime ``kind`` (already resolved from ``auto``)."""
    loaders: dict[str, type[TensorFlowRuntime] | type[OpenVINORuntime] | type[OnnxRuntimeRuntime]] = {
        "tensorflow": TensorFlowRuntime,
        "openvino": OpenVINORuntime,
        "onnxruntime": OnnxRuntimeRuntime,
    }
    if kind not in loaders:
        raise ModelLoadError(f"unknown runtime {kind!r}; choose from {', '.join(RUNTIMES)}")
    if importlib.util.find_spec(kind) is None:  # each runtime's package is named like the runtime
        raise ModelLoadError(f"runtime {kind} is not installed")
    return loaders[kind](version_dir, settings)
