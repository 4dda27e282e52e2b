"""The DICOM node: received slice -> the ``/predict`` pipeline -> DICOM results -> the destinations.

Each slice a PACS stores here is checked and decoded in the association's thread, with the model version served
at that moment (``Classifier.model``, one snapshot from decode to result), then answered 0x0000 and classified
on the node's event loop by the service's own ``input_check.classify_checked`` through a ``Batcher``: the same
preprocessing, batching and input checks as ``/predict``, so the probabilities are the same. Its Comprehensive
SR (and, when configured, a Secondary Capture of its Grad-CAM overlay) is built in memory by
``service.protocols.dicom_results`` in the source study, in one result series per received series, and handed to each
destination's outbox (``delivery``). When a series has been quiet for ``series_quiet_s``, a summary SR of its
slices follows (``series``), and a study whose series are all complete gets one log line, without PHI.

Bounded everywhere: slices waiting for the model (``max_pending``), results waiting for a destination
(``max_outbox``), the spool (``spool_max_bytes``); when one is full, new slices are refused with 0xA700, so a
PACS retries them later and nothing is dropped silently.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import signal
import ssl
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, get_args

import numpy as np

from service.checks import input_check
from service.config import DicomNodeSettings, LogLevel, RuntimeName, Settings
from service.dicom_node import metrics
from service.dicom_node.delivery import (
    Destination,
    DimseDestination,
    Outbox,
    ResultObject,
    RetryPolicy,
    StowDestination,
)
from service.dicom_node.scp import (
    CANNOT_UNDERSTAND,
    MR_IMAGE_STORAGE,
    OUT_OF_RESOURCES,
    SOP_CLASS_MISMATCH,
    Refused,
    StorageSCP,
)
from service.dicom_node.series import SeriesState, SeriesTracker
from service.dicom_node.spool import Spool
from service.errors import ModelNotReadyError, ServiceError
from service.imaging import overlay
from service.imaging.dicom import quiet_pydicom
from service.inference import pipeline
from service.inference.batching import Batcher
from service.inference.classifier import Classifier, LoadedModel
from service.inference.explain import Explainer, ExplanationUnavailableError
from service.inference.reload import ModelWatcher
from service.inference.runtime import inference_streams
from service.protocols import codec
from service.protocols.dicom_results import Algorithm, SourceImage, read_source, secondary_capture, series_report
from service.protocols.dicom_results import structured_report as slice_report

log = logging.getLogger(__name__)

SUMMARY_KIND = "summary"


class NodeStartError(Exception):
    """The node could not start (model not loaded, port taken); ``reason`` is safe to print."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def problems(settings: Settings, node: DicomNodeSettings) -> list[str]:
    """What keeps these settings from running a node (empty when they can)."""
    found = []
    if not node.allowed_aets:
        found.append("MRI_DICOM_NODE_ALLOWED_AETS is empty: list the calling AE titles (your PACS) that may send")
    if node.store_host is None and node.stow_url is None:
        found.append(
            "no destination: set MRI_DICOM_NODE_STORE_HOST/_STORE_PORT/_STORE_AE_TITLE and/or MRI_DICOM_NODE_STOW_URL"
        )
    if node.max_pending > settings.max_queue_size:
        found.append("MRI_DICOM_NODE_MAX_PENDING must not exceed MRI_MAX_QUEUE_SIZE")
    return found


def destinations(node: DicomNodeSettings) -> list[Destination]:
    """The destinations the settings configure."""
    found: list[Destination] = []
    if node.store_host is not None and node.store_ae_title is not None:
        tls = None
        if node.store_tls:
            tls = ssl.create_default_context(cafile=str(node.store_tls_ca_file) if node.store_tls_ca_file else None)
            if node.tls_cert_file is not None and node.tls_key_file is not None:  # mutual TLS when the PACS asks
                tls.load_cert_chain(str(node.tls_cert_file), str(node.tls_key_file))
        found.append(DimseDestination(node.ae_title, node.store_ae_title, node.store_host, node.store_port, tls))
    if node.stow_url is not None:
        basic = None
        if node.stow_username is not None and node.stow_password is not None:
            basic = (node.stow_username, node.stow_password.get_secret_value())
        token = node.stow_token.get_secret_value() if node.stow_token is not None else None
        found.append(StowDestination(node.stow_url, token, basic, node.stow_ca_file, node.stow_timeout_s))
    return found


def describe(data: bytes, kind: str, received: float | None) -> ResultObject:
    """A built result object with the UIDs a destination needs (read back from its header)."""
    import pydicom

    quiet_pydicom()
    header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return ResultObject(data, kind, str(header.SOPClassUID), str(header.SOPInstanceUID), received)


@dataclass(frozen=True)
class _Slice:
    """A received slice, decoded with ``model``'s preprocessing."""

    source: SourceImage
    model: LoadedModel
    images: np.ndarray  # uint8 [1, S, S, 3]
    received: float


class DicomNode:
    """The node's parts, started and stopped together. ``classifier`` (already loaded) and ``destinations`` are
    for tests; by default they come from the settings."""

    def __init__(
        self,
        settings: Settings,
        node: DicomNodeSettings,
        classifier: Classifier | None = None,
        destinations_: Sequence[Destination] | None = None,
    ) -> None:
        if node.max_pending > settings.max_queue_size:
            raise ValueError("MRI_DICOM_NODE_MAX_PENDING must not exceed MRI_MAX_QUEUE_SIZE")
        self.settings = settings
        self.node = node
        self.classifier = classifier if classifier is not None else Classifier(settings)
        self.spool = Spool(node.spool_dir, node.spool_max_bytes) if node.spool_dir is not None else None
        policy = RetryPolicy(
            node.delivery_attempts, node.delivery_backoff_s, node.delivery_max_backoff_s, node.delivery_batch
        )
        chosen = list(destinations_) if destinations_ is not None else destinations(node)
        self.outboxes = [Outbox(destination, policy, node.max_outbox, self.spool) for destination in chosen]
        self.scp = StorageSCP(node, self.admit)
        self.tracker = SeriesTracker(node.series_quiet_s)
        self._explainer = Explainer()
        self._pending = 0
        self._lock = threading.Lock()
        self._decodes = threading.BoundedSemaphore(settings.max_concurrent_decodes)
        self._accepting = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._batcher: Batcher | None = None
        self._watcher: ModelWatcher | None = None
        self._sweeper: Any = None
        self._stop_checks = threading.Event()
        self._checker: threading.Thread | None = None
        self._probes: Any = None

    # ------------------------------------------------------------------------------------------ life cycle
    def start(self) -> None:
        """Load the model (unless loaded), start every part, then listen. Raises ``NodeStartError``."""
        if not self.classifier.ready and not self.classifier.load():
            raise NodeStartError(f"model not loaded: {self.classifier.reason}")
        settings = self.settings
        self._batcher = Batcher(
            self.classifier.infer,
            max_batch_size=settings.max_batch_size,
            max_wait_ms=settings.max_wait_ms,
            max_queue_size=settings.max_queue_size,
            retry_after_s=settings.retry_after_s,
            workers=inference_streams(settings),
        )
        self._batcher.start()
        self._watcher = ModelWatcher(self.classifier, settings.model_poll_interval_s)
        self._watcher.start()
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name="mri-dicom-node-loop", daemon=True)
        self._loop_thread.start()
        self._sweeper = asyncio.run_coroutine_threadsafe(self._sweep_forever(), self._loop)
        for outbox in self.outboxes:
            outbox.start()
        self._checker = threading.Thread(target=self._check_destinations, name="mri-dicom-checks", daemon=True)
        self._checker.start()
        if self.node.http_port:
            from service.dicom_node.probes import ProbeServer

            self._probes = ProbeServer(self.node.host, self.node.http_port, self.readiness)
            self._probes.start()
        try:
            self.scp.start()
        except OSError as exc:
            self.stop()
            raise NodeStartError(f"cannot listen on the DICOM port ({type(exc).__name__})") from None
        self._accepting = True
        host, port = self.scp.address
        log.info(
            "DICOM node %s listening on %s:%d; %d calling AE(s) allowed; destinations: %s",
            self.node.ae_title,
            host,
            port,
            len(self.node.allowed_aets),
            ", ".join(outbox.name for outbox in self.outboxes),
        )

    def stop(self) -> None:
        """Stop listening, classify what was received, send the series summaries, deliver what can be delivered
        within ``graceful_shutdown_s`` (the rest stays in the spool when there is one)."""
        deadline = time.monotonic() + self.settings.graceful_shutdown_s
        self._accepting = False
        self.scp.stop()
        while self.pending and time.monotonic() < deadline:
            time.sleep(0.02)
        loop = self._loop
        if loop is not None:
            if self._sweeper is not None:
                self._sweeper.cancel()
            try:
                closing = asyncio.run_coroutine_threadsafe(self._close_series(everything=True), loop)
                closing.result(timeout=max(deadline - time.monotonic(), 1.0))
            except Exception:
                log.exception("series summaries not sent at shutdown")
        if self._batcher is not None:
            self._batcher.stop(timeout=max(deadline - time.monotonic(), 0.0))
        if self._watcher is not None:
            self._watcher.stop()
        self._stop_checks.set()
        for outbox in self.outboxes:
            outbox.stop(timeout=max(deadline - time.monotonic(), 0.5))
            close = getattr(outbox.destination, "close", None)
            if close is not None:
                close()
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
            if self._loop_thread is not None:
                self._loop_thread.join(5)
            loop.close()
            self._loop = None
        if self._probes is not None:
            self._probes.stop()
            self._probes = None

    @property
    def pending(self) -> int:
        """Slices received and not yet classified."""
        return self._pending

    @property
    def probe_port(self) -> int | None:
        return self._probes.port if self._probes is not None else None

    def readiness(self) -> dict[str, Any]:
        """``{"ready": ..., "reasons": [...]}`` and the queue sizes (``/readyz``)."""
        reasons = []
        if not self.classifier.ready:
            reasons.append(self.classifier.reason or "model not ready")
        if not self._accepting or not self.scp.running:
            reasons.append("DICOM port not listening")
        if self.node.ready_requires_destinations:
            reasons += [f"destination {o.name} not reachable" for o in self.outboxes if not o.up]
        if not self._spool_has_room():
            reasons.append("spool full")
        return {
            "ready": not reasons,
            "reasons": reasons,
            "queue_depth": self.pending,
            "outbox": {outbox.name: outbox.depth for outbox in self.outboxes},
        }

    def _spool_has_room(self) -> bool:
        spool = self.spool
        return spool is None or spool.room(max(spool.max_bytes // 100, min(spool.max_bytes // 2, 1 << 20)))

    def _check_destinations(self) -> None:
        while True:
            for outbox in self.outboxes:
                try:
                    outbox.check()
                except Exception:
                    outbox.up = False
                    log.exception("reachability check of %s failed", outbox.name)
            if self._stop_checks.wait(self.node.destination_check_interval_s):
                return

    # ------------------------------------------------------------------------------------------ receiving
    def admit(self, data: bytes) -> None:
        """Check, decode and queue one received instance (in the association's thread), or raise ``Refused``."""
        if not self._accepting or self._loop is None:
            raise Refused(OUT_OF_RESOURCES, "node not ready or shutting down; retry later")
        if any(outbox.full for outbox in self.outboxes):
            raise Refused(OUT_OF_RESOURCES, "result outbox full; retry later")
        if not self._spool_has_room():
            raise Refused(OUT_OF_RESOURCES, "spool full; retry later")
        with self._lock:
            if self._pending >= self.node.max_pending:
                raise Refused(OUT_OF_RESOURCES, "classification queue full; retry later")
            self._pending += 1
            metrics.QUEUE_DEPTH.set(self._pending)
        try:
            item = self._prepare(data)
            asyncio.run_coroutine_threadsafe(self._classify(item), self._loop)
        except RuntimeError:  # the loop closed under us: shutting down
            self._release()
            raise Refused(OUT_OF_RESOURCES, "node shutting down; retry later") from None
        except BaseException:
            self._release()
            raise

    def _release(self) -> None:
        with self._lock:
            self._pending -= 1
            metrics.QUEUE_DEPTH.set(self._pending)

    def _prepare(self, data: bytes) -> _Slice:
        import pydicom

        received = time.monotonic()
        quiet_pydicom()
        try:
            header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            sop_class, modality = str(header.get("SOPClassUID", "")), str(header.get("Modality", "")).upper()
        except Exception:
            raise Refused(CANNOT_UNDERSTAND, "could not parse the data set") from None
        if sop_class != MR_IMAGE_STORAGE or modality != "MR":
            raise Refused(SOP_CLASS_MISMATCH, "data set is not an MR image")
        try:
            source = read_source(data)
            model = self.classifier.model
        except ModelNotReadyError:
            raise Refused(OUT_OF_RESOURCES, "model not ready; retry later") from None
        except ServiceError as exc:
            raise Refused(CANNOT_UNDERSTAND, exc.reason) from None
        try:
            with self._decodes:
                images = codec.decode_files([data], model.preprocess, self.settings.max_pixels)
        except ServiceError as exc:
            raise Refused(CANNOT_UNDERSTAND, exc.reason) from None
        return _Slice(source, model, images, received)

    # ------------------------------------------------------------------------------------------ classifying
    async def _classify(self, item: _Slice) -> None:
        series = self.tracker.received(item.source)
        metrics.OPEN_SERIES.set(len(self.tracker))
        model = item.model
        try:
            assert self._batcher is not None
            thresholds = input_check.thresholds(model.metadata, self.settings)
            images, probs, checks = await pipeline.classify_checked(
                self._batcher, model, 1, lambda: item.images, thresholds
            )
            prediction = codec.attach_checks(codec.encode_predictions(probs, model.info), checks).predictions[0]
            algorithm = Algorithm.from_model(model.info.name, model.info.version, model.metadata)
            numbers = (series.sr_number(), series.sc_number() if self.node.send_secondary_capture else 0)
            objects = await asyncio.to_thread(self._results, item, images, prediction, algorithm, series, numbers)
        except Exception as exc:
            metrics.CLASSIFIED.labels(result="failed").inc()
            self.tracker.failed(series)
            reason = exc.reason if isinstance(exc, ServiceError) else type(exc).__name__
            log.error("a slice of study %s was not classified: %s", series.study.token, reason)
            return
        finally:
            self._release()
        metrics.CLASSIFIED.labels(result="ok").inc()
        self.tracker.classified(series, item.source, prediction, algorithm)
        self._deliver(objects)

    def _results(
        self,
        item: _Slice,
        images: np.ndarray,
        prediction: Any,
        algorithm: Algorithm,
        series: SeriesState,
        numbers: tuple[int, int],
    ) -> list[ResultObject]:
        """The SR of one slice and, when configured, the Secondary Capture of its Grad-CAM overlay (blocking)."""
        heat = None
        if self.node.send_secondary_capture:
            try:
                chosen = np.array([list(item.model.info.classes).index(prediction.label)])
                heat = self._explainer.heatmaps(item.model, images, chosen)[0][0]
            except ExplanationUnavailableError:
                log.warning("the served model has no gradcam signature: no Secondary Capture is sent")
        explained = prediction.label if heat is not None else None
        report = slice_report(item.source, prediction, algorithm, series.sr_series_uid, numbers[0], explained)
        objects = [describe(report, "sr", item.received)]
        if heat is not None and explained is not None:
            blended = overlay.blend(images[0], heat)
            capture = secondary_capture(item.source, blended, algorithm, explained, series.sc_series_uid, numbers[1])
            objects.append(describe(capture, "sc", item.received))
        return objects

    def _deliver(self, objects: Sequence[ResultObject]) -> None:
        for obj in objects:
            for outbox in self.outboxes:
                outbox.put(obj)

    # ------------------------------------------------------------------------------------------ series
    async def _sweep_forever(self) -> None:
        interval = min(1.0, self.node.series_quiet_s / 4)
        while True:
            await asyncio.sleep(interval)
            try:
                await self._close_series()
            except Exception:
                log.exception("series bookkeeping failed")

    async def _close_series(self, everything: bool = False) -> None:
        closed, finished = self.tracker.close_quiet(everything)
        metrics.OPEN_SERIES.set(len(self.tracker))
        for series in closed:
            if not (self.node.series_summary and series.slices and series.algorithm is not None):
                continue
            try:
                data = await asyncio.to_thread(
                    series_report, series.slices, series.algorithm, series.summary_series_uid
                )
                self._deliver([await asyncio.to_thread(describe, data, SUMMARY_KIND, series.last_received)])
            except ServiceError as exc:
                log.error("the summary of a series of study %s was not built: %s", series.study.token, exc.reason)
        for study in finished:
            log.info(study.log_line())


# ---------------------------------------------------------------------------------------------- the command
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mri-classifier dicom-node",
        description="A DICOM node: receive MR slices (C-STORE), classify them, send the results to the PACS "
        "(C-STORE and/or STOW-RS). Settings: MRI_* (the model) and MRI_DICOM_NODE_* (docs/dicom-node.md).",
    )
    parser.add_argument("--model-dir", dest="model_dir", help="model folder (default /opt/ml/model)")
    parser.add_argument("--runtime", choices=get_args(RuntimeName))
    parser.add_argument("--log-level", dest="log_level", choices=get_args(LogLevel))
    parser.add_argument("--ae-title", dest="ae_title", help="the node's AE title (default MRICLASSIFIER)")
    parser.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="DICOM port (default 11112)")
    parser.add_argument("--http-port", dest="http_port", type=int, help="/metrics, /healthz, /readyz (default 8081)")
    return parser


def run(argv: Sequence[str]) -> int:
    """``mri-classifier dicom-node``: run until SIGTERM/SIGINT; returns the exit code."""
    from pydantic import ValidationError

    from service.inference import model_source

    args = vars(build_parser().parse_args(list(argv)))
    service_keys = ("model_dir", "runtime", "log_level")
    service = {key: args[key] for key in service_keys if args[key] is not None}
    own = {key: value for key, value in args.items() if key not in service_keys and value is not None}
    try:
        settings = model_source.choose(Settings(**service))
        node = DicomNodeSettings(**own)
    except ValidationError as exc:
        sys.stderr.write(f"mri-classifier dicom-node: invalid settings:\n{exc}\n")
        return 2
    found = problems(settings, node)
    if found:
        sys.stderr.write("mri-classifier dicom-node: " + "\n".join(found) + "\n")
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    dicom_node = DicomNode(settings, node)
    try:
        dicom_node.start()
    except NodeStartError as exc:
        log.error("DICOM node not started: %s", exc.reason)
        return 1
    stop.wait()
    log.info("stopping: finishing the slices received and the deliveries in progress")
    dicom_node.stop()
    return 0
