"""Delivery of the node's results to the configured destinations, with retries, backoff and the spool.

Two kinds of destination: a DICOM AE (C-STORE over a new association per batch, pynetdicom's SCU) and a
DICOMweb server (one STOW-RS ``POST {base}/studies`` per batch, a ``multipart/related; type="application/dicom"``
body, httpx). Each has its own ``Outbox``: a bounded in-memory queue and a worker thread that sends what is due.
A failed object is retried after ``delivery_backoff_s``, doubled on each failure up to ``delivery_max_backoff_s``;
after ``delivery_attempts`` failures it counts as failed and is dropped, unless a spool is configured: then it
was written there at its first failure and is retried every ``delivery_max_backoff_s`` until stored (also after
a restart). Reasons in the log are fixed texts (a status code, an exception's class), never a value of an object.
"""

from __future__ import annotations

import io
import logging
import ssl
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from service import mime
from service.dicom_node import metrics
from service.dicom_node.scp import VERIFICATION
from service.dicom_node.spool import Spool
from service.imaging.dicom import quiet_pydicom

log = logging.getLogger(__name__)

#: C-STORE statuses under which the object is stored: success and the standard's warnings.
STORED_STATUSES = frozenset({0x0000, 0xB000, 0xB006, 0xB007})
SR_KINDS = ("sr", "summary")
_FAILED_SOP_SEQUENCE, _REFERENCED_SOP_SEQUENCE, _REFERENCED_SOP_INSTANCE = "00081198", "00081199", "00081155"


@dataclass(frozen=True)
class ResultObject:
    """One result (Part 10 bytes) and what a destination needs to send it, without reading it again."""

    data: bytes
    kind: str  # "sr" | "sc" | "summary"
    sop_class_uid: str
    sop_instance_uid: str
    received: float | None = None  # time.monotonic() of the slice it is the result of (None: from the spool)


class DeliveryError(Exception):
    """A destination could not be reached or refused a whole batch; ``reason`` is a fixed text."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Destination(Protocol):
    """Where results go: ``send`` answers, per object, whether the destination stored it."""

    name: str

    def send(self, objects: Sequence[ResultObject]) -> list[bool]: ...

    def reachable(self) -> bool: ...


def _read(data: bytes) -> Any:
    import pydicom

    quiet_pydicom()
    return pydicom.dcmread(io.BytesIO(data))


class DimseDestination:
    """A DICOM AE that stores the results (C-STORE SCU), e.g. the PACS the images came from."""

    name = "dimse"

    def __init__(
        self,
        calling_ae: str,
        called_ae: str,
        host: str,
        port: int,
        tls: ssl.SSLContext | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.calling_ae, self.called_ae, self.host, self.port = calling_ae, called_ae, host, port
        self.tls, self.timeout_s = tls, timeout_s

    def _associate(self) -> Any:
        from pydicom.uid import (
            ComprehensiveSRStorage,
            ExplicitVRLittleEndian,
            ImplicitVRLittleEndian,
            SecondaryCaptureImageStorage,
        )
        from pynetdicom import AE

        ae = AE(ae_title=self.calling_ae)
        for abstract in (ComprehensiveSRStorage, SecondaryCaptureImageStorage):
            ae.add_requested_context(abstract, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        ae.add_requested_context(VERIFICATION)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_s
        ae.connection_timeout = min(self.timeout_s, 10.0)
        tls_args = (self.tls, self.host) if self.tls is not None else None
        try:
            assoc = ae.associate(self.host, self.port, ae_title=self.called_ae, tls_args=tls_args)
        except (OSError, ssl.SSLError) as exc:
            raise DeliveryError(f"cannot connect ({type(exc).__name__})") from None
        if not assoc.is_established:
            raise DeliveryError("association rejected" if assoc.is_rejected else "association failed")
        return assoc

    def send(self, objects: Sequence[ResultObject]) -> list[bool]:
        assoc = self._associate()
        stored = []
        try:
            for obj in objects:
                try:
                    status = assoc.send_c_store(_read(obj.data))
                except (ValueError, RuntimeError):  # no accepted presentation context for this SOP class
                    stored.append(False)
                    continue
                code = getattr(status, "Status", None)
                stored.append(code in STORED_STATUSES)
                if code not in STORED_STATUSES:
                    log.warning("C-STORE of a %s answered status 0x%04X", obj.kind, code if code is not None else 0)
                if not assoc.is_established:
                    break
        finally:
            if assoc.is_established:
                assoc.release()
        return stored + [False] * (len(objects) - len(stored))

    def reachable(self) -> bool:
        try:
            assoc = self._associate()
        except DeliveryError:
            return False
        try:
            status = assoc.send_c_echo()
            return getattr(status, "Status", None) == 0x0000
        finally:
            if assoc.is_established:
                assoc.release()


class StowDestination:
    """A DICOMweb server that stores the results (STOW-RS), with an optional bearer token or basic auth."""

    name = "stow"

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        basic: tuple[str, str] | None = None,
        ca_file: Path | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        import httpx

        headers = {"Accept": mime.DICOM_JSON}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.url = base_url.rstrip("/") + "/studies"
        self.base_url = base_url
        self._client = httpx.Client(
            headers=headers,
            auth=basic,
            verify=ssl.create_default_context(cafile=str(ca_file)) if ca_file else True,
            timeout=timeout_s,
            follow_redirects=False,
        )

    def close(self) -> None:
        self._client.close()

    def send(self, objects: Sequence[ResultObject]) -> list[bool]:
        import httpx

        boundary = uuid.uuid4().hex
        head = f"--{boundary}\r\nContent-Type: {mime.DICOM}\r\n\r\n".encode("ascii")
        body = b"".join(head + obj.data + b"\r\n" for obj in objects) + f"--{boundary}--\r\n".encode("ascii")
        content_type = f'{mime.MULTIPART_RELATED}; type="{mime.DICOM}"; boundary={boundary}'
        try:
            try:
                response = self._client.post(self.url, content=body, headers={"Content-Type": content_type})
            except httpx.RemoteProtocolError:  # a kept-alive connection the server had closed: once more, anew
                response = self._client.post(self.url, content=body, headers={"Content-Type": content_type})
        except httpx.HTTPError as exc:
            raise DeliveryError(f"STOW-RS request failed ({type(exc).__name__})") from None
        if response.status_code not in (200, 202, 409):
            raise DeliveryError(f"STOW-RS answered HTTP {response.status_code}")
        failed, referenced = _stow_outcome(response.content)
        if response.status_code == 409 and not failed and not referenced:
            return [False] * len(objects)
        stored = []
        for obj in objects:
            uid = obj.sop_instance_uid
            stored.append(uid not in failed and (uid in referenced or not referenced))
        return stored

    def reachable(self) -> bool:
        """The server answers (any status but an authentication refusal or a server error)."""
        import httpx

        try:
            response = self._client.get(self.base_url)
        except httpx.HTTPError:
            return False
        return response.status_code < 500 and response.status_code not in (401, 403)


def _stow_outcome(content: bytes) -> tuple[set[str], set[str]]:
    """(failed, stored) SOP Instance UIDs of a STOW-RS answer (``application/dicom+json``); empty when the
    body is not that."""
    import json

    try:
        answer = json.loads(content) if content else {}
    except ValueError:
        return set(), set()
    if isinstance(answer, list):
        answer = answer[0] if answer and isinstance(answer[0], dict) else {}
    if not isinstance(answer, dict):
        return set(), set()

    def uids(tag: str) -> set[str]:
        items = answer.get(tag, {}).get("Value", []) if isinstance(answer.get(tag), dict) else []
        found: set[str] = set()
        for item in items:
            values = item.get(_REFERENCED_SOP_INSTANCE, {}).get("Value", []) if isinstance(item, dict) else []
            found.update(str(value) for value in values)
        return found

    return uids(_FAILED_SOP_SEQUENCE), uids(_REFERENCED_SOP_SEQUENCE)


def result_from_file(path: Path) -> ResultObject:
    """A spooled object, described from its own header."""
    data = path.read_bytes()
    header = _read(data)
    sop_class = str(header.SOPClassUID)
    kind = "sc" if sop_class == "1.2.840.10008.5.1.4.1.1.7" else "sr"
    return ResultObject(data, kind, sop_class, str(header.SOPInstanceUID))


@dataclass(eq=False)
class _Entry:
    obj: ResultObject
    path: Path | None = None  # its spool file, once written there
    attempts: int = 0
    due: float = field(default_factory=time.monotonic)
    failed: bool = False  # counted as failed already (it stays in the spool)

    def load(self) -> ResultObject:
        if self.obj.data or self.path is None:
            return self.obj
        obj = result_from_file(self.path)  # its kind is known in this run; read from the file after a restart
        kind = self.obj.kind or obj.kind
        return ResultObject(obj.data, kind, obj.sop_class_uid, obj.sop_instance_uid, self.obj.received)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    backoff_s: float = 2.0
    max_backoff_s: float = 300.0
    batch: int = 32

    def delay(self, failures: int) -> float:
        return float(min(self.backoff_s * 2 ** max(failures - 1, 0), self.max_backoff_s))


class Outbox:
    """The results waiting for one destination, sent by one worker thread."""

    def __init__(
        self, destination: Destination, policy: RetryPolicy, max_items: int, spool: Spool | None = None
    ) -> None:
        self.destination = destination
        self.name = destination.name
        self.policy = policy
        self.max_items = max_items
        self.spool = spool
        self._entries: list[_Entry] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.up = False  # the last reachability check
        if spool is not None:
            for path in spool.pending(self.name):  # left by a previous run: sent first
                self._entries.append(_Entry(ResultObject(b"", "", "", ""), path=path))
        metrics.OUTBOX_DEPTH.labels(destination=self.name).set(len(self._entries))

    @property
    def in_memory(self) -> int:
        """Objects held in memory (those in the spool excepted)."""
        with self._cond:
            return sum(1 for entry in self._entries if entry.path is None)

    @property
    def depth(self) -> int:
        with self._cond:
            return len(self._entries)

    @property
    def full(self) -> bool:
        return self.in_memory >= self.max_items

    def put(self, obj: ResultObject) -> None:
        with self._cond:
            self._entries.append(_Entry(obj))
            metrics.OUTBOX_DEPTH.labels(destination=self.name).set(len(self._entries))
            self._cond.notify_all()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"mri-dicom-send-{self.name}", daemon=True)
            self._thread.start()

    def stop(self, timeout: float) -> None:
        """Try once more everything that waits (for up to ``timeout`` seconds), then stop; what is left stays in
        the spool when there is one, else it is counted as dropped."""
        with self._cond:
            self._stopping = True
            for entry in self._entries:
                entry.due = 0.0
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._cond:
            left = [entry for entry in self._entries if entry.path is None]
            self._entries = []
        for entry in left:
            if self.spool is None or self.spool.put(self.name, entry.obj.data) is None:
                metrics.DROPPED.labels(destination=self.name).inc()
        if left:
            kept = "kept in the spool" if self.spool is not None else "dropped"
            log.warning("shutdown: %d result object(s) for %s not delivered, %s", len(left), self.name, kept)
        metrics.OUTBOX_DEPTH.labels(destination=self.name).set(0)

    def wait_empty(self, timeout: float) -> bool:
        """Block until nothing waits (tests, shutdown); whether it emptied in time."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._entries:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.1))
        return True

    def _next_batch(self) -> list[_Entry] | None:
        with self._cond:
            while True:
                now = time.monotonic()
                due = [entry for entry in self._entries if entry.due <= now]
                if due:
                    return due[: self.policy.batch]
                if self._stopping:
                    return None
                wake = min((entry.due for entry in self._entries), default=None)
                self._cond.wait(None if wake is None else max(wake - now, 0.01))

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                objects = [entry.load() for entry in batch]
            except (OSError, ValueError, AttributeError):  # a spool file removed or unreadable: nothing to send
                log.error("a spooled result could not be read; it is dropped")
                self._finish([(entry, False) for entry in batch], give_up=True)
                continue
            try:
                stored = self.destination.send(objects)
            except DeliveryError as exc:
                log.warning("delivery of %d object(s) to %s failed: %s", len(objects), self.name, exc.reason)
                stored = [False] * len(objects)
            except Exception:
                log.exception("delivery to %s failed unexpectedly", self.name)
                stored = [False] * len(objects)
            now = time.monotonic()
            for obj, ok in zip(objects, stored, strict=True):
                if ok:
                    metrics.SENT.labels(destination=self.name, kind=obj.kind).inc()
                    if obj.kind == "sr" and obj.received is not None:
                        metrics.RESULT_LATENCY.labels(destination=self.name).observe(now - obj.received)
            self._finish(list(zip(batch, stored, strict=True)))

    def _finish(self, outcomes: list[tuple[_Entry, bool]], give_up: bool = False) -> None:
        for entry, ok in outcomes:
            if ok:
                if entry.path is not None and self.spool is not None:
                    self.spool.remove(entry.path)
                self._remove(entry)
                continue
            entry.attempts += 1
            if self.spool is not None and entry.path is None and not give_up:
                entry.path = self.spool.put(self.name, entry.obj.data)
                if entry.path is not None:  # on disk now: free the memory
                    entry.obj = ResultObject(b"", entry.obj.kind, "", "", entry.obj.received)
            if entry.attempts < self.policy.attempts and not give_up:
                metrics.RETRIED.labels(destination=self.name).inc()
                entry.due = time.monotonic() + self.policy.delay(entry.attempts)
                continue
            if not entry.failed:
                metrics.FAILED.labels(destination=self.name).inc()
                entry.failed = True
            if entry.path is not None and not give_up:
                entry.due = time.monotonic() + self.policy.max_backoff_s
                continue
            metrics.DROPPED.labels(destination=self.name).inc()
            log.error("a %s result for %s failed %d time(s), dropped", entry.obj.kind, self.name, entry.attempts)
            if entry.path is not None and self.spool is not None:
                self.spool.remove(entry.path)
            self._remove(entry)

    def _remove(self, entry: _Entry) -> None:
        with self._cond:
            if entry in self._entries:
                self._entries.remove(entry)
            metrics.OUTBOX_DEPTH.labels(destination=self.name).set(len(self._entries))
            self._cond.notify_all()

    def check(self) -> bool:
        """Check the destination's reachability now (blocking) and remember the answer."""
        self.up = bool(self.destination.reachable())
        metrics.DESTINATION_UP.labels(destination=self.name).set(int(self.up))
        return self.up
