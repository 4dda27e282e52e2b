"""Every Prometheus metric of the DICOM node, defined once, prefixed ``mri_dicom_node_``.

Labels are low-cardinality only: outcomes, destination kinds (``dimse``, ``stow``) and result kinds (``sr``,
``sc``, ``summary``); never a UID or any other value of a DICOM object. The service's own ``mri_*`` metrics
(batcher, stages, model) are exposed beside them: the node runs the same batcher and model wrapper.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PREFIX = "mri_dicom_node"

ASSOCIATIONS = Counter(
    f"{PREFIX}_associations_total",
    "Association requests: accepted, or rejected (calling AE not allowed, too many at once, ...).",
    ["result"],
)
ECHOES = Counter(f"{PREFIX}_echoes_total", "C-ECHO requests answered.")
RECEIVED = Counter(
    f"{PREFIX}_received_total",
    "C-STORE requests by outcome: accepted (0x0000), out_of_resources (0xA700: queue, outbox or spool full, "
    "association or instance too large, shutting down), sop_class_mismatch (0xA900), cannot_understand (0xC000).",
    ["status"],
)
CLASSIFIED = Counter(
    f"{PREFIX}_classified_total", "Received slices classified (ok) or not (failed, logged without values).", ["result"]
)
SENT = Counter(f"{PREFIX}_sent_total", "Result objects stored by a destination.", ["destination", "kind"])
RETRIED = Counter(f"{PREFIX}_retried_total", "Deliveries of a result object retried after a failure.", ["destination"])
FAILED = Counter(
    f"{PREFIX}_failed_total",
    "Result objects whose delivery failed every attempt (then dropped, or kept in the spool and retried).",
    ["destination"],
)
DROPPED = Counter(
    f"{PREFIX}_dropped_total",
    "Result objects given up after their last attempt: no spool configured, or no room left in it.",
    ["destination"],
)
QUEUE_DEPTH = Gauge(f"{PREFIX}_queue_depth", "Slices received and not yet classified.")
OUTBOX_DEPTH = Gauge(f"{PREFIX}_outbox_depth", "Result objects waiting for delivery.", ["destination"])
SPOOL_BYTES = Gauge(f"{PREFIX}_spool_bytes", "Bytes of result objects in the spool folder.")
OPEN_SERIES = Gauge(f"{PREFIX}_open_series", "Series received and not yet quiet.")
DESTINATION_UP = Gauge(
    f"{PREFIX}_destination_up", "1 when the last reachability check of a destination succeeded.", ["destination"]
)
RESULT_LATENCY = Histogram(
    f"{PREFIX}_result_seconds",
    "From a slice received to its SR stored by a destination.",
    ["destination"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0),
)
