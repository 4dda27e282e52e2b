"""Helpers for tests that start a real ``mri-classifier`` process on loopback."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import httpx


def free_port() -> int:
    """A loopback port that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[bytes], grace_s: float = 30, kill_wait_s: float = 10) -> None:
    """Stop a started process: SIGTERM, then SIGKILL when it has not exited within ``grace_s``."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(kill_wait_s)


def serve_command() -> list[str]:
    """The ``mri-classifier`` command of this interpreter's environment (``python -m`` when not installed)."""
    script = shutil.which("mri-classifier", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "training.cli"]


def inflight_requests(url: str) -> float:
    """The server's in-flight requests from its /metrics, not counting this scrape."""
    metrics = httpx.get(f"{url}/metrics", timeout=5).text
    line = next(line for line in metrics.splitlines() if line.startswith("mri_inflight_requests "))
    return float(line.split()[-1]) - 1


def start_upload(port: int, body: bytes, sent: int, path: str = "/invocations") -> socket.socket:
    """A JPEG request whose head and first ``sent`` body bytes are on the wire; the rest comes later."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: {len(body)}\r\n\r\n"
    sock.sendall(head.encode() + body[:sent])
    return sock


def read_answer(sock: socket.socket) -> bytes:
    """Read one HTTP/1.1 answer (head and Content-Length body) and close the socket."""
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
        if b"\r\n\r\n" in answer:
            head, _, rest = answer.partition(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ),
                None,
            )
            if length is not None and len(rest) >= length:
                break
    sock.close()
    return answer
