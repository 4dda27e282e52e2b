"""The model wrapper: find the newest version, check its metadata, load it on a runtime, warm it up.

``Classifier.load()`` is called once, in a thread started by the app's lifespan (never at import). Until it
succeeds the classifier is not ready and says why; a model whose classes differ from ``service.labels``
is refused (not ready), so labels can never be silently swapped. A loaded model is an immutable
``LoadedModel`` swapped in one assignment, so a later hot reload can warm a new version while the old one
keeps serving.

``infer`` answers one structured row per image (``OUTPUT_DTYPE``: the probabilities and the model's
``ood_score``, NaN for a model exported without one), so the batcher hands each request its own rows of
every output; ``predict`` is the probabilities alone.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from service import metrics
from service.config import Settings
from service.errors import ModelNotReadyError
from service.imaging.preprocessing import PreprocessConfig
from service.inference import model_source
from service.inference.runtime import (
    OOD_OUTPUT,
    OUTPUT_NAME,
    ModelLoadError,
    Runtime,
    inference_streams,
    load_runtime,
    runtime_choice,
)
from service.inference.tta import outputs_with_tta
from service.inference.versions import METADATA_FILE, find_version_dir, version_number
from service.labels import CLASSES, NUM_CLASSES, ClassOrderError, check_class_order

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "mri-classifier"
#: One row per image: every output of the model (``ood_score`` is NaN for a model without it).
OUTPUT_DTYPE = np.dtype([(OUTPUT_NAME, np.float32, (NUM_CLASSES,)), (OOD_OUTPUT, np.float32)])


def output_rows(outputs: dict[str, np.ndarray]) -> np.ndarray:
    """Named runtime outputs -> structured rows of ``OUTPUT_DTYPE`` (a batch the batcher can split by image)."""
    probs = outputs[OUTPUT_NAME]
    rows = np.empty(len(probs), OUTPUT_DTYPE)
    rows[OUTPUT_NAME] = probs
    rows[OOD_OUTPUT] = outputs.get(OOD_OUTPUT, np.full(len(probs), np.nan, np.float32))
    return rows


class ModelState(StrEnum):
    IDLE = "idle"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class ModelInfo:
    """What is being served; shown on /readyz, in responses and in the ``mri_model_info`` metric."""

    name: str
    version: int
    runtime: str
    device: str
    precision: str
    image_size: int
    classes: tuple[str, ...]
    load_seconds: float
    tta: str = "none"
    runtime_reason: str = ""


@dataclass(frozen=True)
class LoadedModel:
    """One warm model version: its runtime, metadata and preprocessing."""

    info: ModelInfo
    preprocess: PreprocessConfig
    metadata: dict[str, Any]
    runtime: Runtime
    version_dir: Path

    def infer(self, images: np.ndarray) -> np.ndarray:
        """uint8 or float images [N, S, S, 3] in [0, 255] -> ``OUTPUT_DTYPE`` rows [N] (with the configured TTA).
        uint8 images go to the runtime as they are (OpenVINO converts them inside the graph)."""
        images = np.asarray(images)
        x = images if images.dtype == np.uint8 else np.asarray(images, dtype=np.float32)
        return output_rows(outputs_with_tta(self.runtime.outputs, x, self.info.tta))

    def predict(self, images: np.ndarray) -> np.ndarray:
        """uint8 or float images [N, S, S, 3] in [0, 255] -> probabilities [N, 4] (with the configured TTA)."""
        return np.asarray(self.infer(images)[OUTPUT_NAME])


Fingerprint = tuple[tuple[str, int, int], ...]


def fingerprint(version_dir: Path) -> Fingerprint:
    """(path, size, mtime) of every file of a version: changes when a copy in progress goes on or ends."""
    try:
        files = sorted(p for p in version_dir.rglob("*") if p.is_file())
        return tuple((str(p.relative_to(version_dir)), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    except OSError:  # a file vanished while we looked: report a value no load can match
        return (("", -1, time.monotonic_ns()),)


def read_metadata(version_dir: Path) -> dict[str, Any]:
    """Read and check ``metadata.json``: classes must equal ``service.labels.CLASSES`` in order."""
    path = version_dir / METADATA_FILE
    if not path.is_file():
        raise ModelLoadError(f"{METADATA_FILE} missing: cannot verify the class order")
    try:
        metadata = json.loads(path.read_text())
    except (OSError, ValueError):
        raise ModelLoadError(f"{METADATA_FILE} is not valid JSON") from None
    if not isinstance(metadata, dict):
        raise ModelLoadError(f"{METADATA_FILE} is not a JSON object")
    try:
        check_class_order(metadata.get("classes"))
    except ClassOrderError as exc:
        raise ModelLoadError(str(exc)) from None
    if not isinstance(metadata.get("preprocessing"), dict):
        raise ModelLoadError(f"{METADATA_FILE} has no preprocessing section")
    return metadata


def warm_up(model: LoadedModel, batch_sizes: tuple[int, ...]) -> None:
    """Run the model on black images at each batch size and check the output is a probability per class. The
    images are uint8, as the service's decoders make them: the path that requests take is the one warmed."""
    size = model.preprocess.image_size
    for n in sorted(set(batch_sizes)):
        probs = model.predict(np.zeros((n, size, size, 3), dtype=np.uint8))
        if probs.shape != (n, len(CLASSES)) or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-2):
            raise ModelLoadError(f"model output has shape {probs.shape}; expected ({n}, {len(CLASSES)}) probabilities")


def load_model(settings: Settings, version_dir: Path | None = None) -> LoadedModel:
    """Find (unless ``version_dir`` is given), check, load and warm up the model (blocking; seconds)."""
    started = time.perf_counter()
    version_dir = version_dir or find_version_dir(Path(settings.model_dir), settings.model_version)
    metadata = read_metadata(version_dir)
    preprocess = PreprocessConfig.from_dict(metadata["preprocessing"])
    choice = runtime_choice(settings.runtime)
    runtime = load_runtime(choice.runtime, version_dir, settings)
    if runtime.input_size not in (None, preprocess.image_size):
        raise ModelLoadError(
            f"metadata image_size {preprocess.image_size} does not match the model input {runtime.input_size}"
        )
    info = ModelInfo(
        name=settings.model_name or str(metadata.get("model_name") or DEFAULT_MODEL_NAME),
        version=version_number(version_dir, metadata),
        runtime=runtime.name,
        device=runtime.device,
        precision=runtime.precision,
        image_size=preprocess.image_size,
        classes=CLASSES,
        load_seconds=0.0,
        tta=settings.tta,
        runtime_reason=choice.reason,
    )
    model = LoadedModel(info, preprocess, metadata, runtime, version_dir)
    if settings.warmup:
        warm_up(model, (1, settings.max_batch_size))
    seconds = time.perf_counter() - started
    info = ModelInfo(**{**info.__dict__, "load_seconds": round(seconds, 3)})
    return LoadedModel(info, preprocess, metadata, runtime, version_dir)


class Classifier:
    """Holds the served model and its state; thread-safe to read while a load runs in another thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._model: LoadedModel | None = None
        self._state = ModelState.IDLE
        self._reason: str | None = "model not loaded yet"
        self._lock = threading.Lock()
        self._fingerprint: Fingerprint | None = None  # of the served version's files
        self._failed: tuple[Path, Fingerprint] | None = None  # the last version that failed to load

    @property
    def state(self) -> ModelState:
        return self._state

    @property
    def reason(self) -> str | None:
        """Why the classifier is not ready (``None`` when it is)."""
        return self._reason

    @property
    def ready(self) -> bool:
        return self._state is ModelState.READY and self._model is not None

    @property
    def model(self) -> LoadedModel:
        """The served model, or a 503 ``ModelNotReadyError`` with the reason."""
        model = self._model
        if model is None or not self.ready:
            raise ModelNotReadyError(f"model not ready: {self._reason or self._state.value}")
        return model

    def load(self) -> bool:
        """Load the model (blocking). Never raises: failures leave the classifier not ready with a reason."""
        with self._lock:
            self._state, self._reason = ModelState.LOADING, "model is loading"
            metrics.MODEL_READY.set(0)
            # The files as they were BEFORE the attempt: a copy that completes while a load fails changes
            # them, so the next poll retries (taken after, the completed copy would look already tried).
            attempted = self._version_on_disk()
            try:
                builtin = model_source.until_trained(self.settings)  # a model store still empty
                model = load_model(self.settings) if builtin is None else load_model(self.settings, builtin)
            except ModelLoadError as exc:
                log.error("model not loaded from %s: %s", self.settings.model_dir, exc.reason)
                self._state, self._reason = ModelState.FAILED, exc.reason
                self._failed = attempted
                return False
            except Exception:
                log.exception("model failed to load from %s", self.settings.model_dir)
                self._state, self._reason = ModelState.FAILED, "model failed to load (see the server log)"
                self._failed = attempted
                return False
            self.use(model)
            return True

    def use(self, model: LoadedModel) -> None:
        """Serve ``model`` (already loaded and warm) from now on: one assignment, no gap in service.

        Metrics and the log line come first and the state last, so whoever sees the service ready (``/readyz``)
        also finds the line that says what it serves."""
        info = model.info
        metrics.MODEL_LOAD_SECONDS.set(info.load_seconds)
        metrics.set_model_info(info.name, info.version, info.runtime, info.device, info.precision)
        metrics.MODEL_READY.set(1)
        log.info(
            "serving %s version %d on %s (%s, %s, %d inference stream(s)) after %.1f s; runtime: %s",
            info.name,
            info.version,
            info.runtime,
            info.device,
            info.precision,
            inference_streams(self.settings),
            info.load_seconds,
            info.runtime_reason,
        )
        self._fingerprint, self._failed = fingerprint(model.version_dir), None
        self._model = model
        self._state, self._reason = ModelState.READY, None

    def _version_on_disk(self) -> tuple[Path, Fingerprint] | None:
        try:
            target = find_version_dir(Path(self.settings.model_dir), self.settings.model_version)
        except ModelLoadError:
            return None
        return target, fingerprint(target)

    def poll(self) -> bool:
        """Hot reload, once: load the version the model directory now points at when it is not the one served
        (or its files changed), warm it, then swap it in; the old model serves until then. A version that
        fails is logged and counted, leaves the old model serving, and is retried only once its files change.
        Returns whether a new model was swapped in. Called by ``service.inference.reload.ModelWatcher``."""
        if self._state in (ModelState.IDLE, ModelState.LOADING) or not self._lock.acquire(blocking=False):
            return False  # the first load has not finished
        try:
            try:
                target = find_version_dir(Path(self.settings.model_dir), self.settings.model_version)
            except ModelLoadError as exc:
                if self._model is None:
                    self._reason = exc.reason
                return False  # nothing loadable: keep what is served (or stay not ready)
            current, prints = self._model, fingerprint(target)
            if current is not None and target == current.version_dir and prints == self._fingerprint:
                return False
            if self._failed == (target, prints):
                return False
            log.info("model directory changed: loading version %s", target.name)
            try:
                model = load_model(self.settings, target)
            except Exception as exc:
                reason = exc.reason if isinstance(exc, ModelLoadError) else "model failed to load (see the server log)"
                if not isinstance(exc, ModelLoadError):
                    log.exception("model version %s failed to load", target.name)
                self._failed = (target, prints)
                if current is None:
                    self._reason = reason
                    log.error("model version %s not loaded: %s", target.name, reason)
                else:
                    log.error(
                        "model version %s not loaded (%s); still serving version %d",
                        target.name,
                        reason,
                        current.info.version,
                    )
                metrics.MODEL_RELOADS.labels(result="failure").inc()  # counted once logged: the count implies the line
                return False
            self.use(model)
            self._fingerprint = prints
            metrics.MODEL_RELOADS.labels(result="success").inc()
            return True
        finally:
            self._lock.release()

    def infer(self, images: np.ndarray) -> np.ndarray:
        """``OUTPUT_DTYPE`` rows [N] for images [N, S, S, 3] (called from the batcher's thread)."""
        return self.model.infer(images)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Probabilities [N, 4] for images [N, S, S, 3]."""
        return self.model.predict(images)
