"""The decode and encode steps around prediction: request payloads -> model inputs, probabilities -> answers.

Image files go through ``service.preprocessing.preprocess`` and JSON pixel arrays through
``to_model_input``, so every input is resized and padded exactly as training does. Nothing here knows
about HTTP beyond raising ``service.errors`` exceptions.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from service import metrics
from service.classifier import ModelInfo
from service.errors import BadRequestError, InvalidInputError, PayloadTooLargeError
from service.labels import CLASSES
from service.preprocessing import MIN_SIDE, PreprocessConfig, preprocess, to_model_input
from service.schemas import Prediction, PredictResponse

SERVING_SIGNATURE = "serving_default"
INPUT_NAME = "images"


def decode_files(files: Sequence[bytes], config: PreprocessConfig, max_pixels: int) -> np.ndarray:
    """Image files (JPEG, PNG, DICOM) -> uint8 batch [N, S, S, 3]."""
    return np.stack([preprocess(data, config, max_pixels) for data in files])


def parse_json(body: bytes) -> Any:
    """Parse a JSON body (400 when it is not JSON)."""
    if not body:
        raise BadRequestError("empty JSON body")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise BadRequestError("malformed JSON body") from None


def tfserving_instances(payload: Any, max_images: int) -> tuple[list[Any], str]:
    """The instances of a TensorFlow Serving request and the answer's key (``predictions`` or ``outputs``).

    Row format ``{"instances": [...]}`` or columnar ``{"inputs": [...]}`` (or ``{"inputs": {"images": [...]}}``);
    an optional ``signature_name`` must be ``serving_default``.
    """
    if not isinstance(payload, dict):
        raise InvalidInputError('expected a JSON object with "instances" or "inputs"')
    signature = payload.get("signature_name", SERVING_SIGNATURE)
    if signature != SERVING_SIGNATURE:
        raise InvalidInputError(f"unknown signature_name; this endpoint serves {SERVING_SIGNATURE}")
    if ("instances" in payload) == ("inputs" in payload):
        raise InvalidInputError('send exactly one of "instances" or "inputs"')
    key = "predictions" if "instances" in payload else "outputs"
    instances = payload.get("instances", payload.get("inputs"))
    if isinstance(instances, dict):
        if set(instances) != {INPUT_NAME}:
            raise InvalidInputError(f'columnar "inputs" must hold only "{INPUT_NAME}"')
        instances = instances[INPUT_NAME]
    if not isinstance(instances, list) or not instances:
        raise InvalidInputError("instances must be a non-empty list")
    if len(instances) > max_images:
        raise PayloadTooLargeError(f"{len(instances)} images in one request; the limit is {max_images}")
    return instances, key


def pixels_to_rgb(instance: Any, index: int, max_pixels: int) -> np.ndarray:
    """A height x width x 3 array of pixel values in [0, 255] -> uint8 RGB (422 for anything else)."""
    try:
        array = np.asarray(instance, dtype=np.float64)
    except OverflowError:  # an integer too large for a float (JSON allows 4300 digits)
        raise InvalidInputError(f"instance {index} has pixel values outside [0, 255]") from None
    except (ValueError, TypeError):
        raise InvalidInputError(f"instance {index} is not a numeric array") from None
    if array.ndim != 3 or array.shape[2] != 3 or array.shape[0] < 1 or array.shape[1] < 1:
        raise InvalidInputError(f"instance {index} has shape {list(array.shape)}; expected [height, width, 3]")
    if min(array.shape[:2]) < MIN_SIDE:  # the rule image files follow
        height, width = array.shape[:2]
        raise InvalidInputError(f"instance {index} is {width}x{height}; each side must be at least {MIN_SIDE} pixels")
    if array.shape[0] * array.shape[1] > max_pixels:
        raise PayloadTooLargeError(f"instance {index} is over the limit of {max_pixels} pixels")
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 255:
        raise InvalidInputError(f"instance {index} has pixel values outside [0, 255]")
    return np.rint(array).astype(np.uint8)


def decode_instance(instance: Any, index: int, config: PreprocessConfig, max_pixels: int) -> np.ndarray:
    """One TF Serving instance (``{"b64": ...}``, a pixel array, or either under ``"images"``) -> model input."""
    if isinstance(instance, dict):
        if set(instance) == {INPUT_NAME}:
            instance = instance[INPUT_NAME]
        if isinstance(instance, dict):
            if set(instance) != {"b64"} or not isinstance(instance["b64"], str):
                raise InvalidInputError(f'instance {index} must be {{"b64": "<base64 image>"}} or a pixel array')
            try:
                data = base64.b64decode(instance["b64"], validate=True)
            except (binascii.Error, ValueError):
                raise InvalidInputError(f"instance {index} is not valid base64") from None
            return preprocess(data, config, max_pixels)
    return to_model_input(pixels_to_rgb(instance, index, max_pixels), config)


def decode_instances(instances: Sequence[Any], config: PreprocessConfig, max_pixels: int) -> np.ndarray:
    """TF Serving instances -> uint8 batch [N, S, S, 3]."""
    return np.stack([decode_instance(inst, i, config, max_pixels) for i, inst in enumerate(instances)])


def record_predictions(probs: np.ndarray) -> None:
    """Count predicted classes and observe confidences."""
    for row in probs:
        top = int(np.argmax(row))
        metrics.PREDICTIONS.labels(label=CLASSES[top]).inc()
        metrics.CONFIDENCE.observe(float(row[top]))


def encode_predictions(probs: np.ndarray, info: ModelInfo) -> PredictResponse:
    """Probabilities [N, 4] -> the ``/predict`` answer."""
    started = time.perf_counter()
    record_predictions(probs)
    predictions = []
    for row in probs:
        top = int(np.argmax(row))
        predictions.append(
            Prediction(
                label=CLASSES[top],
                confidence=float(row[top]),
                probabilities={name: float(p) for name, p in zip(CLASSES, row, strict=True)},
            )
        )
    response = PredictResponse(model_name=info.name, model_version=info.version, predictions=predictions)
    metrics.STAGE_LATENCY.labels(stage="encode").observe(time.perf_counter() - started)
    return response


def encode_tfserving(probs: np.ndarray, key: str) -> dict[str, list[list[float]]]:
    """Probabilities [N, 4] -> ``{"predictions": [[p_glioma, p_meningioma, p_no_tumor, p_pituitary], ...]}``."""
    started = time.perf_counter()
    record_predictions(probs)
    answer = {key: probs.astype(float).tolist()}
    metrics.STAGE_LATENCY.labels(stage="encode").observe(time.perf_counter() - started)
    return answer
