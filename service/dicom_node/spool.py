"""The spool: result objects whose delivery failed, kept on disk until a destination stores them.

Only used when ``MRI_DICOM_NODE_SPOOL_DIR`` is set (otherwise nothing is ever written to disk). One folder per
destination; each object is one file named by a random UUID (never by a UID of the study), written to a
temporary name, made readable by its owner only, then renamed, so a crash leaves no half-written object. The
total size is bounded by ``MRI_DICOM_NODE_SPOOL_MAX_BYTES``: ``put`` refuses an object that does not fit, and
the node refuses new slices (0xA700) while the spool is nearly full. A file is deleted as soon as its object is
delivered, and files left by a previous run are delivered first.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from pathlib import Path

from service.dicom_node import metrics

log = logging.getLogger(__name__)

SUFFIX = ".dcm"


class Spool:
    """A bounded folder of result objects, per destination; thread-safe."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        for stale in root.glob("*/*.tmp"):  # a write interrupted by a crash: never renamed, never complete
            stale.unlink(missing_ok=True)
        self._bytes = sum(path.stat().st_size for path in root.glob(f"*/*{SUFFIX}"))
        metrics.SPOOL_BYTES.set(self._bytes)

    @property
    def used_bytes(self) -> int:
        return self._bytes

    def room(self, needed: int = 0) -> bool:
        """Whether ``needed`` more bytes fit."""
        return self._bytes + needed <= self.max_bytes

    def put(self, destination: str, data: bytes) -> Path | None:
        """Write one object for ``destination``; ``None`` when it does not fit."""
        with self._lock:
            if not self.room(len(data)):
                return None
            self._bytes += len(data)
        folder = self.root / destination
        folder.mkdir(exist_ok=True, mode=0o700)
        name = uuid.uuid4().hex
        temporary, path = folder / f"{name}.tmp", folder / f"{name}{SUFFIX}"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            temporary.rename(path)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            with self._lock:
                self._bytes -= len(data)
            log.error("could not write to the spool folder (%s)", type(exc).__name__)
            return None
        metrics.SPOOL_BYTES.set(self._bytes)
        return path

    def remove(self, path: Path) -> None:
        """Delete a delivered object's file."""
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return
        with self._lock:
            self._bytes -= size
        metrics.SPOOL_BYTES.set(self._bytes)

    def pending(self, destination: str) -> list[Path]:
        """The objects spooled for ``destination`` (by a previous run too), oldest first."""
        folder = self.root / destination
        if not folder.is_dir():
            return []
        return sorted(folder.glob(f"*{SUFFIX}"), key=lambda path: path.stat().st_mtime_ns)
