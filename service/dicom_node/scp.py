"""The DICOM listener: a pynetdicom Storage SCP for MR Image Storage, plus Verification (C-ECHO).

Safe by default: only the calling AE titles of ``allowed_aets`` may associate, and only when they call this
node's AE title (others are rejected: permanent, "calling/called AE title not recognised"); at most
``max_associations`` at once (more are rejected: transient, "local limit exceeded"). Each C-STORE is answered
with a status, never dropped silently:

- ``0x0000`` once the slice is decoded and queued for classification (``admit`` returned);
- ``0xA700`` (Refused: out of resources) for an instance over ``max_instance_bytes``, past
  ``max_association_instances`` in one association, or when ``admit`` finds the queue, an outbox or the spool
  full, or the node shutting down;
- ``0xA900`` (data set does not match SOP class) for a data set that is not an MR image;
- ``0xC000`` (cannot understand) for an image the service cannot decode (a reason of its own).

The Error Comment of a refusal is a fixed text. pynetdicom's logger is silenced (at INFO it prints data sets of
some services): the node logs its own lines, without tag values.

Enhanced MR Image Storage is not negotiated: its objects hold a multi-frame volume, and the service decodes
single frames (``service.imaging.dicom``). A PACS then sends the classic MR images of a series, or nothing.
"""

from __future__ import annotations

import logging
import ssl
import threading
import weakref
from collections.abc import Callable
from typing import Any

from pydicom.dataset import Dataset

from service.config import DicomNodeSettings
from service.dicom_node import metrics

log = logging.getLogger(__name__)

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
VERIFICATION = "1.2.840.10008.1.1"
SUCCESS, OUT_OF_RESOURCES, SOP_CLASS_MISMATCH, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xA900, 0xC000
#: The label of each refusal status in ``mri_dicom_node_received_total``.
STATUS_LABELS = {
    SUCCESS: "accepted",
    OUT_OF_RESOURCES: "out_of_resources",
    SOP_CLASS_MISMATCH: "sop_class_mismatch",
    CANNOT_UNDERSTAND: "cannot_understand",
}
#: Uncompressed transfer syntaxes: always decodable. Compressed ones are added when pydicom has a decoder.
_UNCOMPRESSED = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still sent by old modalities)
)
_COMPRESSED = (
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline (8-bit)
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
)


class Refused(Exception):
    """A C-STORE refused with ``status`` and a fixed ``comment`` (the Error Comment, at most 64 characters)."""

    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment[:64]


def transfer_syntaxes() -> list[str]:
    """The transfer syntaxes the service can decode here: the uncompressed ones, then each compressed one whose
    pydicom decoder has a plugin installed (JPEG Extended 12-bit is left out: Pillow decodes its 8-bit form only)."""
    from pydicom.pixels.decoders.base import get_decoder

    found = list(_UNCOMPRESSED)
    for uid in _COMPRESSED:
        try:
            if get_decoder(uid).is_available:
                found.append(uid)
        except (NotImplementedError, ValueError, KeyError):
            continue
    return found


def quiet_pynetdicom() -> None:
    """pynetdicom logs data sets at INFO level for some services: silence and detach its logger."""
    logger = logging.getLogger("pynetdicom")
    logger.setLevel(logging.CRITICAL + 1)
    logger.propagate = False


def server_tls(settings: DicomNodeSettings) -> ssl.SSLContext | None:
    """The TLS context of the DICOM port (``None``: plain TCP); with a CA file, callers need a certificate."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(settings.tls_cert_file), str(settings.tls_key_file))
    if settings.tls_ca_file is not None:
        context.load_verify_locations(str(settings.tls_ca_file))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _status(code: int, comment: str | None = None) -> Dataset:
    status = Dataset()
    status.Status = code
    if comment:
        status.ErrorComment = comment
    return status


class StorageSCP:
    """The listener. ``admit(data)`` (Part 10 bytes of one received instance) queues a slice or raises
    ``Refused``; it runs in the association's thread, so it must be quick and thread-safe."""

    def __init__(self, settings: DicomNodeSettings, admit: Callable[[bytes], None]) -> None:
        self.settings = settings
        self._admit = admit
        self._counts: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._server: Any = None

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) listened on: the configured port, or the one the system chose for port 0."""
        if self._server is None:
            raise RuntimeError("the listener is not running")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def _ae(self) -> Any:
        from pynetdicom import AE

        quiet_pynetdicom()
        settings = self.settings
        ae = AE(ae_title=settings.ae_title)
        ae.require_calling_aet = list(settings.allowed_aets)
        ae.require_called_aet = True
        ae.maximum_associations = settings.max_associations
        ae.network_timeout = settings.network_timeout_s
        ae.acse_timeout = ae.dimse_timeout = min(settings.network_timeout_s, 30.0)
        ae.add_supported_context(MR_IMAGE_STORAGE, transfer_syntaxes())
        ae.add_supported_context(VERIFICATION)
        return ae

    def start(self) -> None:
        """Listen (returns once the port is bound; raises ``OSError`` when it cannot be)."""
        from pynetdicom import evt

        handlers = [
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_REJECTED, self._on_rejected),
        ]
        self._server = self._ae().start_server(
            (self.settings.host, self.settings.port),
            block=False,
            ssl_context=server_tls(self.settings),
            evt_handlers=handlers,
        )

    def stop(self) -> None:
        """Stop listening and close the associations in progress."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()

    def _on_echo(self, event: Any) -> int:
        metrics.ECHOES.inc()
        return SUCCESS

    def _on_accepted(self, event: Any) -> None:
        metrics.ASSOCIATIONS.labels(result="accepted").inc()

    def _on_rejected(self, event: Any) -> None:
        metrics.ASSOCIATIONS.labels(result="rejected").inc()
        log.warning("association rejected (calling AE not allowed, wrong called AE, or too many associations)")

    def _on_store(self, event: Any) -> Dataset | int:
        try:
            self._store(event)
        except Refused as refused:
            metrics.RECEIVED.labels(status=STATUS_LABELS[refused.status]).inc()
            return _status(refused.status, refused.comment)
        except Exception as exc:  # never let a bug end the association with a traceback that could quote a value
            log.error("C-STORE handling failed unexpectedly (%s)", type(exc).__name__)
            metrics.RECEIVED.labels(status=STATUS_LABELS[CANNOT_UNDERSTAND]).inc()
            return _status(CANNOT_UNDERSTAND, "internal error")
        metrics.RECEIVED.labels(status="accepted").inc()
        return SUCCESS

    def _store(self, event: Any) -> None:
        assoc = event.assoc
        with self._lock:
            count = self._counts.get(assoc, 0) + 1
            self._counts[assoc] = count
        if count > self.settings.max_association_instances:
            raise Refused(OUT_OF_RESOURCES, "association instance limit reached; open a new one")
        if str(event.request.AffectedSOPClassUID) != MR_IMAGE_STORAGE:
            raise Refused(SOP_CLASS_MISMATCH, "only MR Image Storage is accepted")
        data = event.encoded_dataset(include_meta=True)
        if len(data) > self.settings.max_instance_bytes:
            raise Refused(OUT_OF_RESOURCES, "instance over the size limit")
        self._admit(data)
