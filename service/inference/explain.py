"""Grad-CAM for the served model, through the exported SavedModel's ``gradcam`` signature.

The signature (written by ``training.export``) takes ``images`` float32 [N, S, S, 3] in [0, 255] and
``class_index`` int32 [N] (-1 = the predicted class) and returns ``heatmap`` [N, h, w] in [0, 1] on the last
convolutional block (h = w = S / 32 for EfficientNet). It always runs on TensorFlow, on the GPU when there is
one: when the served runtime is TensorFlow its loaded SavedModel is reused; otherwise (OpenVINO, ONNX Runtime)
the SavedModel is loaded with TensorFlow lazily, on the first explanation, once per model version.

Probabilities are not taken from here: the route gets them from the batcher like ``/predict`` does, so both
routes answer the same numbers, and asks this module only for the heatmap of the chosen class.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service import metrics
from service.errors import ServiceError
from service.inference.classifier import LoadedModel

log = logging.getLogger(__name__)

GRADCAM_SIGNATURE = "gradcam"
TARGET_LAYER = "top_activation"
METHOD = "grad-cam"


class ExplanationUnavailableError(ServiceError):
    """The served model was exported without a ``gradcam`` signature."""

    status_code = 501


@dataclass(frozen=True)
class GradCam:
    """The ``gradcam`` signature of one model version."""

    version_dir: Path
    device: str
    _fn: Any
    _tf: Any

    def heatmaps(self, images: np.ndarray, class_indices: np.ndarray) -> np.ndarray:
        """Heatmaps float32 [N, h, w] in [0, 1] of classes ``class_indices`` [N] for uint8 images [N, S, S, 3]."""
        tf = self._tf
        result = self._fn(
            images=tf.constant(np.asarray(images, dtype=np.float32)),
            class_index=tf.constant(np.asarray(class_indices, dtype=np.int32)),
        )
        heat = np.asarray(result["heatmap"].numpy(), dtype=np.float32)
        return np.clip(np.nan_to_num(heat), 0.0, 1.0)


def load_gradcam(model: LoadedModel) -> GradCam:
    """The model's ``gradcam`` signature: from the TensorFlow runtime's SavedModel, else loaded now (seconds)."""
    import tensorflow as tf

    saved_model = getattr(model.runtime, "saved_model", None)
    if saved_model is None:
        started = time.perf_counter()
        saved_model = tf.saved_model.load(str(model.version_dir))
        log.info("loaded the gradcam signature with TensorFlow in %.1f s", time.perf_counter() - started)
    try:
        fn = saved_model.signatures[GRADCAM_SIGNATURE]
    except KeyError:
        raise ExplanationUnavailableError(
            f"the served model has no {GRADCAM_SIGNATURE} signature; re-export it to get explanations"
        ) from None
    gpus = tf.config.list_logical_devices("GPU")
    return GradCam(model.version_dir, gpus[0].name.replace("/device:", "") if gpus else "CPU", fn, tf)


class Explainer:
    """Grad-CAM for whichever model is served now: one signature per model version, loaded once, the previous
    version's dropped when a new one is served; at most ``max_concurrent`` computations at a time."""

    def __init__(self, max_concurrent: int = 2) -> None:
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_concurrent)
        # the served version and its signature, or the reason it has none (remembered: never loaded twice)
        self._current: tuple[LoadedModel, GradCam | ExplanationUnavailableError] | None = None

    def gradcam(self, model: LoadedModel) -> GradCam:
        """The signature of ``model`` (blocking the first time for a model served by another runtime); a
        model without one raises ``ExplanationUnavailableError`` (501) at once after the first look."""
        with self._lock:
            current = self._current
            if current is None or current[0] is not model:
                self._current = None  # let the previous version's variables go before loading the next
                try:
                    current = (model, load_gradcam(model))
                except ExplanationUnavailableError as exc:
                    current = (model, exc)
                self._current = current
        found = current[1]
        if isinstance(found, ExplanationUnavailableError):
            raise ExplanationUnavailableError(found.reason)
        return found

    def heatmaps(self, model: LoadedModel, images: np.ndarray, class_indices: np.ndarray) -> tuple[np.ndarray, str]:
        """Heatmaps [N, h, w] for ``class_indices`` and the device they were computed on (blocking)."""
        cam = self.gradcam(model)
        with self._slots:
            started = time.perf_counter()
            heat = cam.heatmaps(images, class_indices)
            metrics.STAGE_LATENCY.labels(stage="explain").observe(time.perf_counter() - started)
        return heat, cam.device
