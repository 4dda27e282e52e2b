"""Helpers for tests that start a real ``mri-classifier`` process on loopback."""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path


def free_port() -> int:
    """A loopback port that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_command() -> list[str]:
    """The ``mri-classifier`` command of this interpreter's environment (``python -m`` when not installed)."""
    script = shutil.which("mri-classifier", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "training.cli"]
