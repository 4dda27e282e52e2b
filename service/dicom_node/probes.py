"""The node's small HTTP port: ``/metrics`` (Prometheus), ``/healthz`` (the process answers) and ``/readyz``
(200 when ready, else 503 with the reasons). Standard library only; nothing else is served (404), nothing of a
request is logged."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from service import metrics as service_metrics
from service import mime

Readiness = Callable[[], dict[str, Any]]


class ProbeServer:
    """Serves the probes and metrics from a daemon thread; ``readiness()`` answers ``{"ready": bool, ...}``."""

    def __init__(self, host: str, port: int, readiness: Readiness) -> None:
        handler = _handler(readiness)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="mri-dicom-probes", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(readiness: Readiness) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "mri-dicom-node"
        sys_version = ""

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, content_type = service_metrics.exposition()
                self._answer(200, body, content_type)
            elif path == "/healthz":
                self._answer(200, b'{"status":"ok"}', mime.JSON)
            elif path == "/readyz":
                state = readiness()
                self._answer(200 if state.get("ready") else 503, json.dumps(state).encode(), mime.JSON)
            else:
                self._answer(404, b'{"error":"not found"}', mime.JSON)

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # no access log
            return

    return Handler
