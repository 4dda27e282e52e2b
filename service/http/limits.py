"""Request guards, as ASGI middleware: deadlines, a concurrency limit and clean early answers.

``RequestGuardMiddleware`` (outer) gives each request a deadline for its body (408 when a client drips it:
slowloris) and one for the whole request (504), and closes the connection after any answer sent before the
body was read (a 401, 413 or 503): it first drains what is left when that is small, so ordinary clients read
the answer, and otherwise closes instead of swallowing an endless upload. ``ConcurrencyLimitMiddleware``
(inner, after authentication) answers 503 with ``Retry-After`` once ``max_concurrent_requests`` are in
flight; probes and metrics are never refused. ``add_guards`` installs both (and authentication) in order,
and sets the number of concurrent image decodes (``service.inference.pipeline``). Which paths are probes, metrics and
pages comes from the one list of routes, ``service.http.routes.rules``.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics, mime
from service.config import Settings
from service.errors import RequestTimeoutError
from service.http.auth import APIKeyMiddleware, document_api_key, open_paths
from service.http.routes.rules import METRICS_PATH, PROBE_PATHS
from service.http.routes.ui import PAGE_PATHS
from service.inference import pipeline

log = logging.getLogger(__name__)

#: Longest time spent draining an unread body before an early answer (then the connection is closed).
DRAIN_SECONDS = 2.0


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value)
    return None


class _Body:
    """How much of one request's body has been received."""

    def __init__(self, scope: Scope) -> None:
        length = _header(scope, b"content-length")
        self.declared = int(length) if length is not None and length.isdigit() else None
        self.complete = not (self.declared or _header(scope, b"transfer-encoding"))
        self.received = 0

    def record(self, message: Message) -> None:
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.complete = self.complete or not message.get("more_body", False)
        else:  # http.disconnect: nothing more will come
            self.complete = True


class RequestGuardMiddleware:
    """Body and request deadlines; ``Connection: close`` after an answer that left the body unread."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, body_timeout_s: float, request_timeout_s: float) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.request_timeout_s = request_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        body = _Body(scope)
        body_deadline = loop.time() + self.body_timeout_s
        started = False

        async def guarded_receive() -> Message:
            if body.complete:
                return await receive()
            try:
                async with asyncio.timeout_at(body_deadline):
                    message = await receive()
            except TimeoutError:
                raise RequestTimeoutError(f"request body not received within {self.body_timeout_s:g} s") from None
            body.record(message)
            return message

        async def drain() -> bool:
            """Read and drop the rest of the body when it is small; whether it was all read."""
            if body.declared is not None and body.declared - body.received > self.max_body_bytes:
                return False
            budget = body.received + self.max_body_bytes
            try:
                async with asyncio.timeout_at(min(body_deadline, loop.time() + DRAIN_SECONDS)):
                    while not body.complete and body.received <= budget:
                        body.record(await receive())
            except TimeoutError:
                return False
            return body.complete

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if not body.complete and not await drain():
                    message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
            await send(message)

        deadline = asyncio.timeout(self.request_timeout_s)
        try:
            async with deadline:
                await self.app(scope, guarded_receive, guarded_send)
        except TimeoutError:
            if not deadline.expired():
                raise
            log.warning("%s request timed out after %g s", scope["method"], self.request_timeout_s)
            if not started:
                reason = f"request not answered within {self.request_timeout_s:g} s"
                await JSONResponse({"error": reason}, status_code=504)(scope, guarded_receive, guarded_send)


class ConcurrencyLimitMiddleware:
    """503 + ``Retry-After`` once ``limit`` requests are in flight (paths in ``exempt`` always pass)."""

    def __init__(self, app: ASGIApp, *, limit: int, retry_after_s: int, exempt: frozenset[str]) -> None:
        self.app = app
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.exempt = exempt
        self.active = 0  # one event loop: no lock needed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit:
            metrics.LIMITED.inc()
            reason = "server busy: too many requests in flight; retry later"
            headers = {mime.RETRY_AFTER: str(self.retry_after_s)}
            await JSONResponse({"error": reason}, status_code=503, headers=headers)(scope, receive, send)
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


def add_guards(app: FastAPI, settings: Settings) -> None:
    """Install, from inner to outer: the concurrency limit, authentication (when a key is set), the deadlines;
    and bound the concurrent image decodes.

    Unauthenticated requests are refused before they take a concurrency slot; every early answer goes
    through ``RequestGuardMiddleware`` so that its connection is drained or closed.
    """
    pipeline.limit_decodes(settings.max_concurrent_decodes)
    app.add_middleware(
        ConcurrencyLimitMiddleware,
        limit=settings.max_concurrent_requests,
        retry_after_s=settings.retry_after_s,
        exempt=PROBE_PATHS | {METRICS_PATH},
    )
    keys = [key.get_secret_value() for key in (settings.api_key, settings.api_key_previous) if key is not None]
    if keys:
        reachable = open_paths(settings, PROBE_PATHS, METRICS_PATH) | PAGE_PATHS
        app.add_middleware(APIKeyMiddleware, keys=keys, open_paths=reachable)
        document_api_key(app, reachable)  # /docs' Authorize dialog
    app.add_middleware(
        RequestGuardMiddleware,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
        request_timeout_s=settings.request_timeout_s,
    )
