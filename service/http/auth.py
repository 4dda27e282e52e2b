"""Optional authentication: an API key in ``X-API-Key`` or as ``Authorization: Bearer <key>``.

Off unless ``MRI_API_KEY`` is set (``MRI_API_KEY_PREVIOUS`` is accepted too, for rotation). Keys are compared
in constant time (``hmac.compare_digest`` of SHA-256 digests, so neither content nor length leaks, and every
configured key is always compared). Missing or wrong credentials get 401 with ``WWW-Authenticate``. Probes
and ``/metrics`` stay open unless ``MRI_AUTH_EXEMPT_HEALTH`` / ``MRI_AUTH_EXEMPT_METRICS`` are false. Nothing
the client sent is logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from service.config import Settings

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
REALM = "mri-classifier"
#: The two ways to send the key, as OpenAPI security schemes (Swagger UI's Authorize dialog offers both).
SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "APIKey": {"type": "apiKey", "in": "header", "name": API_KEY_HEADER},
    "Bearer": {"type": "http", "scheme": "bearer"},
}


def document_api_key(app: FastAPI, open_paths: frozenset[str]) -> None:
    """Declare the API key in ``app``'s OpenAPI document: required everywhere but on ``open_paths``."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
        schema["security"] = [{name: []} for name in SECURITY_SCHEMES]
        for path, operations in schema.get("paths", {}).items():
            if path in open_paths:
                for operation in operations.values():
                    operation["security"] = []
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def open_paths(settings: Settings, probe_paths: frozenset[str], metrics_path: str) -> frozenset[str]:
    """The paths reachable without credentials under ``settings``."""
    paths: set[str] = set()
    if settings.auth_exempt_health:
        paths |= probe_paths
    if settings.auth_exempt_metrics:
        paths.add(metrics_path)
    return frozenset(paths)


def presented_key(scope: Scope) -> bytes | None:
    """The credential of a request: ``X-API-Key``, else the token of ``Authorization: Bearer``."""
    authorization = None
    for name, value in scope.get("headers", ()):
        name = name.lower()
        if name == API_KEY_HEADER.lower().encode():
            return bytes(value).strip()
        if name == b"authorization":
            authorization = bytes(value)
    if authorization is not None:
        scheme, _, token = authorization.strip().partition(b" ")
        if scheme.lower() == b"bearer" and token.strip():
            return token.strip()
    return None


class APIKeyMiddleware:
    """Refuse requests outside ``open_paths`` that do not present one of ``keys``."""

    def __init__(self, app: ASGIApp, *, keys: Sequence[str], open_paths: frozenset[str]) -> None:
        if not keys:
            raise ValueError("APIKeyMiddleware needs at least one key")
        self.app = app
        self._digests = [hashlib.sha256(key.encode()).digest() for key in keys]
        self.open_paths = open_paths

    def valid(self, presented: bytes) -> bool:
        """Constant-time check of ``presented`` against every configured key."""
        digest = hashlib.sha256(presented).digest()
        matched = False
        for expected in self._digests:
            matched |= hmac.compare_digest(digest, expected)
        return matched

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        presented = presented_key(scope)
        if presented is not None and self.valid(presented):
            await self.app(scope, receive, send)
            return
        challenge = f'Bearer realm="{REALM}"' + (', error="invalid_token"' if presented is not None else "")
        log.info("refused a %s request: %s credentials", scope["method"], "invalid" if presented else "missing")
        reason = f"authentication required: send the API key in {API_KEY_HEADER} or Authorization: Bearer"
        headers = {"WWW-Authenticate": challenge}
        await JSONResponse({"error": reason}, status_code=401, headers=headers)(scope, receive, send)
