"""Every Prometheus metric of the service, defined once, prefixed ``mri_``.

Labels are low-cardinality only: route templates (never raw paths), status codes, stage names, class names.
Exposed on ``GET /metrics`` with prometheus-client's own encoder.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

PREFIX = "mri"

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter(
    f"{PREFIX}_requests_total",
    "HTTP requests by route template, method and status code.",
    ["route", "method", "status"],
)
REQUEST_LATENCY = Histogram(
    f"{PREFIX}_request_duration_seconds",
    "HTTP request latency by route template, from the first byte in to the response start.",
    ["route"],
    buckets=_LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge(f"{PREFIX}_inflight_requests", "HTTP requests being handled now.")
STAGE_LATENCY = Histogram(
    f"{PREFIX}_stage_duration_seconds",
    "Latency of one pipeline stage: decode (per request), queue (per image, waiting for a batch), "
    "inference (per batch), encode (per request).",
    ["stage"],
    buckets=_LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram(
    f"{PREFIX}_batch_size",
    "Images per executed batch (_count = executions, _sum = images inferred).",
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256),
)
QUEUE_DEPTH = Gauge(f"{PREFIX}_queue_depth", "Images admitted to the batcher and not yet inferred.")
REJECTED = Counter(f"{PREFIX}_rejected_total", "Requests refused with 503 because the batching queue was full.")
LIMITED = Counter(f"{PREFIX}_limited_total", "Requests refused with 503 by the concurrency limit.")
MODEL_POLLS = Counter(
    f"{PREFIX}_model_polls_total", "Polls of the model directory by the hot-reload watcher (finished ones)."
)
MODEL_RELOADS = Counter(
    f"{PREFIX}_model_reloads_total",
    "Hot reloads of a new model version: success (swapped in) or failure (the old model kept serving).",
    ["result"],
)
PREDICTIONS = Counter(f"{PREFIX}_predictions_total", "Predicted class of each classified image.", ["label"])
WARNINGS = Counter(
    f"{PREFIX}_warnings_total",
    "Classified images whose answer carries a warning, by reason (colour_image, bright_background, "
    "low_confidence, unlike_training; an image with two reasons counts under both). Divided by "
    "mri_predictions_total, it is the warning rate per reason: a rise in unlike_training is drift.",
    ["reason"],
)
CONFIDENCE = Histogram(
    f"{PREFIX}_prediction_confidence",
    "Probability of the predicted class.",
    buckets=(0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
)
MODEL_LOAD_SECONDS = Gauge(
    f"{PREFIX}_model_load_seconds", "Seconds the last model load took (read, convert, compile, warm up)."
)
MODEL_READY = Gauge(f"{PREFIX}_model_ready", "1 when a model is loaded, warm and serving, else 0.")
MODEL_INFO = Gauge(
    f"{PREFIX}_model_info",
    "The model being served (value 1).",
    ["name", "version", "runtime", "device", "precision"],
)


def set_model_info(name: str, version: int, runtime: str, device: str, precision: str) -> None:
    """Point the info gauge at the model now served (older label sets are removed)."""
    MODEL_INFO.clear()
    MODEL_INFO.labels(name=name, version=str(version), runtime=runtime, device=device, precision=precision).set(1)


def exposition() -> tuple[bytes, str]:
    """The Prometheus text exposition of the default registry and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
