"""ASGI middleware that counts requests by route template and status, times them and tracks in-flight."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics


class MetricsMiddleware:
    """Record ``mri_requests_total``, ``mri_request_duration_seconds`` and ``mri_inflight_requests``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        metrics.IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            metrics.IN_FLIGHT.dec()
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            metrics.REQUESTS.labels(route=route, method=scope["method"], status=str(status)).inc()
            metrics.REQUEST_LATENCY.labels(route=route).observe(time.perf_counter() - started)
