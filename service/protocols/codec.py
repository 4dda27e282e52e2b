"""The decode and encode steps around prediction: request payloads -> model inputs, probabilities -> answers.

Image files go through ``service.imaging.preprocessing.preprocess`` and JSON pixel arrays through
``to_model_input``, so every input is resized and padded exactly as training does. Nothing here knows
about HTTP beyond raising ``service.errors`` exceptions.
"""

from __future__ import annotations

import base64
import binascii
import gc
import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from service import metrics
from service.checks.input_check import Check
from service.errors import BadRequestError, InvalidInputError, PayloadTooLargeError
from service.imaging.preprocessing import MIN_SIDE, PreprocessConfig, preprocess, to_model_input
from service.inference.classifier import ModelInfo
from service.labels import CLASSES
from service.schemas import InputCheck, Prediction, PredictResponse

SERVING_SIGNATURE = "serving_default"
INPUT_NAME = "images"


def decode_files(files: Sequence[bytes], config: PreprocessConfig, max_pixels: int) -> np.ndarray:
    """Image files (JPEG, PNG, DICOM) -> uint8 batch [N, S, S, 3]."""
    return np.stack([preprocess(data, config, max_pixels) for data in files])


#: Arrays, objects and strings a JSON body may hold beyond what its numbers justify, so that a small wrong
#: request still gets the precise reason of the full validation rather than the cheap pre-scan's.
JSON_SLACK = 1024


def check_json_shape(body: bytes, max_images: int = 0) -> None:
    """Refuse, from byte counts alone and before any object is built, a JSON body that cannot be a batch of
    at most ``max_images`` instances (plus ``JSON_SLACK``) (413).

    A pixel instance of H x W x 3 values (W >= ``MIN_SIDE``) holds 1 + H + H*W arrays and 3*H*W - 1 commas:
    at most 3/8 of an array per comma; a ``{"b64": ...}`` instance holds two objects and three strings. A body
    with more arrays, objects or strings than that would only cost memory and time to build: 10 MB of
    ``[[],[],...]`` are 3.5 million lists (250 MB, seconds of parsing that hold the GIL). Brackets and quotes
    inside strings are counted too: a valid request has none (base64 has neither).
    """
    containers = body.count(b"[") + body.count(b"{")
    if containers > 3 * body.count(b",") // 8 + 4 * max_images + JSON_SLACK:
        raise PayloadTooLargeError("JSON body has more arrays or objects than a batch of images can hold")
    if body.count(b'"') // 2 > 3 * max_images + 4 + JSON_SLACK:
        raise PayloadTooLargeError("JSON body has more strings than a batch of images can hold")


def _int(text: str) -> int:
    """``int`` as Python code: the C parser calls it for every number, and each call is a point where the
    interpreter can hand the GIL to the event loop (``json.loads`` alone holds it for the whole body)."""
    return int(text)


def _float(text: str) -> float:
    """``float`` as Python code (see :func:`_int`)."""
    return float(text)


def parse_json(body: bytes, max_images: int = 0) -> Any:
    """Parse a JSON request body (400 when it is not JSON, 413 when it cannot be a batch of ``max_images``).

    Run it in a worker thread: after :func:`check_json_shape`, the parser passes through Python code at least
    once per few arrays, so the event loop keeps answering while a large pixel batch is parsed.
    """
    if not body:
        raise BadRequestError("empty JSON body")
    check_json_shape(body, max_images)
    try:
        return json.loads(body, parse_int=_int, parse_float=_float)
    except (ValueError, RecursionError):
        raise BadRequestError("malformed JSON body") from None


#: Pixels converted by one numpy call: each call holds the GIL, so a large JSON pixel array is converted
#: piece by piece, and the event loop's thread gets the GIL in between.
PIXELS_PER_STEP = 16_384
VALUES_PER_STEP = 3 * PIXELS_PER_STEP
_gc_lock = threading.Lock()
_gc_pausers = 0
_gc_was_enabled = True


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a JSON batch is parsed and converted (in any thread).

    The parser builds up to a million lists; on Python 3.11 each full collection they trigger walks the whole
    heap holding the GIL (0.7 s each on the test model, six of them for a 9 MB body). Those lists hold no
    cycles and are freed by reference counting before the collector is enabled again.
    """
    global _gc_pausers, _gc_was_enabled
    with _gc_lock:
        if _gc_pausers == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pausers += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pausers -= 1
            if _gc_pausers == 0 and _gc_was_enabled:
                gc.enable()


def _values_per_item(value: list[Any]) -> int:
    """Values in each element of a nested list, judged from its first elements (1 for a flat list)."""
    count, item = 1, value[0]
    while isinstance(item, list):
        count *= len(item)
        if not item:
            break
        item = item[0]
    return count


def numeric_array(value: list[Any]) -> np.ndarray:
    """``np.asarray(value, dtype=float64)`` of a nested (or flat) JSON list, converted in steps of at most
    ``VALUES_PER_STEP`` values so that a worker thread hands the GIL to the event loop in between.

    Raises ``ValueError``/``TypeError``/``OverflowError`` as ``np.asarray`` does for a ragged or non-numeric list.
    """
    if not value:
        return np.asarray(value, dtype=np.float64)
    per_item = max(1, _values_per_item(value))
    if per_item * len(value) <= VALUES_PER_STEP:
        return np.asarray(value, dtype=np.float64)
    if per_item > VALUES_PER_STEP:
        if not all(isinstance(item, list) for item in value):
            raise ValueError("not a numeric array")
        return np.stack([numeric_array(item) for item in value])
    step = max(1, VALUES_PER_STEP // per_item)
    return np.concatenate([np.asarray(value[i : i + step], dtype=np.float64) for i in range(0, len(value), step)])


def release(value: list[Any]) -> None:
    """Empty a nested list in steps: one deallocation of millions of objects would hold the GIL."""
    if not value:
        return
    per_item = max(1, _values_per_item(value))
    if per_item > VALUES_PER_STEP:
        for item in value:
            if isinstance(item, list):
                release(item)
    step = max(1, VALUES_PER_STEP // per_item)
    while value:
        del value[-step:]


def _rows_to_array(rows: list[Any], max_pixels: int) -> np.ndarray | None:
    """The float array of one pixel instance (its lists emptied on the way); None (``rows`` left as they
    were) when they are not a numeric array within ``max_pixels``: decoding gives the reason."""
    if not rows or not all(isinstance(row, list) for row in rows) or len(rows) * len(rows[0]) > max_pixels:
        return None
    try:
        array = numeric_array(rows)
    except (ValueError, TypeError, OverflowError):
        return None
    release(rows)
    return array


def _pixel_arrays(instances: list[Any], max_pixels: int) -> None:
    """Replace the pixel-array instances (bare or under ``"images"``) by float arrays, in place."""
    for index, instance in enumerate(instances):
        if isinstance(instance, dict) and set(instance) == {INPUT_NAME} and isinstance(instance[INPUT_NAME], list):
            array = _rows_to_array(instance[INPUT_NAME], max_pixels)
            if array is not None:
                instances[index] = {INPUT_NAME: array}
        elif isinstance(instance, list):
            array = _rows_to_array(instance, max_pixels)
            if array is not None:
                instances[index] = array


def parse_instances(body: bytes, max_images: int, max_pixels: int) -> tuple[list[Any], str]:
    """A TF Serving JSON body -> its instances (pixel arrays as numpy arrays) and the answer's key.

    For a worker thread: the parse and the conversion hand the GIL to the event loop often and never start
    a garbage collection, so a large pixel batch does not stall other requests and probes.
    """
    with gc_paused():
        instances, key = tfserving_instances(parse_json(body, max_images), max_images)
        _pixel_arrays(instances, max_pixels)
        return instances, key


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
    rows = instance if isinstance(instance, list) and instance and isinstance(instance[0], list) else None
    if rows is not None and len(rows) * len(rows[0]) > max_pixels:  # before building an array
        raise PayloadTooLargeError(f"instance {index} is over the limit of {max_pixels} pixels")
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


def attach_checks(response: PredictResponse, checks: list[Check]) -> PredictResponse:
    """Put each image's check into its prediction of a ``/predict`` answer."""
    for prediction, result in zip(response.predictions, checks, strict=True):
        prediction.check = InputCheck(**result.to_dict())
    return response


def tfserving_checks(checks: list[Check]) -> dict[str, list[dict[str, Any]]]:
    """The extra ``checks`` key beside a TF Serving ``predictions`` answer (clients reading only
    ``predictions`` are unaffected)."""
    return {"checks": [result.to_dict() for result in checks]}
