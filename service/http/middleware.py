"""ASGI middleware: request IDs for tracing, and request counts, latencies and in-flight requests."""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics

REQUEST_ID_HEADER = "X-Request-ID"
#: A client's ID is kept when it is this sane (a UUID, a trace ID, a load balancer's ID); anything else is replaced.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_NO_REQUEST = "-"

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("mri_request_id", default=_NO_REQUEST)


def current_request_id() -> str:
    """The ID of the request being handled in this context (``-`` outside a request)."""
    return _request_id.get()


def choose_request_id(sent: str | None) -> str:
    """The client's ``X-Request-ID`` when it is sane, else a new random one (32 hex digits)."""
    if sent is not None and _SANE_REQUEST_ID.fullmatch(sent):
        return sent
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Give every log record a ``request_id`` attribute (for the ``%(request_id)s`` of the log format)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get()
        return True


class RequestIdMiddleware:
    """Take the client's ``X-Request-ID`` (when sane) or make one, keep it for this request's log lines (the
    access log line included) and return it as the ``X-Request-ID`` header of the answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = next((v for k, v in scope["headers"] if k == b"x-request-id"), None)
        request_id = choose_request_id(None if sent is None else sent.decode("latin-1"))
        # Not reset afterwards: a 500 is answered by Starlette's outermost handler after this returns, and it
        # names the ID too. Each request runs in its own task, so the value never leaks into another request.
        _request_id.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        await self.app(scope, receive, send_with_id)


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
