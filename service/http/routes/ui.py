"""The web page (``GET /`` and its assets, from ``service/static``) and the API docs (``GET /docs``: Swagger UI
from the ``fastapi-offline`` package). No CDN: everything is package data served by the service.

Only the files listed here are served (no directory listing, no path from the request reaches the disk), with
a Content-Security-Policy that allows nothing from outside the service, so both pages work air-gapped.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files
from importlib.resources.abc import Traversable

from fastapi import APIRouter
from fastapi.responses import Response

from service.errors import NotFoundError

router = APIRouter(include_in_schema=False)

STATIC_FOLDER = "static"
_ASSETS: dict[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "docs.html": "text/html; charset=utf-8",
    "docs.js": "text/javascript; charset=utf-8",
}
#: Swagger UI's files, from the maintained ``fastapi-offline`` wheel (Swagger UI is Apache-2.0; see NOTICE).
DOCS_PACKAGE = "fastapi_offline"
_DOCS_ASSETS: dict[str, str] = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
}
#: The API docs hold no data: ``/docs``, its assets and ``/openapi.json`` open without a key, and the calls made
#: from the page carry the key typed into its Authorize dialog.
DOCS_PATHS: frozenset[str] = frozenset({"/docs", "/openapi.json", *(f"/docs/{name}" for name in _DOCS_ASSETS)})
#: The page, the docs and their assets hold no data, so they stay reachable without credentials (the page asks
#: for the API key after a 401 from the API and sends it as ``X-API-Key``).
PAGE_PATHS: frozenset[str] = frozenset({"/", *(f"/{STATIC_FOLDER}/{name}" for name in _ASSETS)}) | DOCS_PATHS
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _file(name: str) -> Traversable:
    if name in _DOCS_ASSETS:
        return files(DOCS_PACKAGE).joinpath("static", name)
    return files("service").joinpath(STATIC_FOLDER, name)


@lru_cache(maxsize=len(_ASSETS) + len(_DOCS_ASSETS))
def asset(name: str) -> bytes:
    """The bytes of one listed file of the page or of the API docs."""
    return _file(name).read_bytes()


def _serve(name: str, listed: dict[str, str] = _ASSETS) -> Response:
    if name not in listed:
        raise NotFoundError("not found")
    return Response(asset(name), media_type=listed[name], headers=_HEADERS)


@router.get("/")
async def index() -> Response:
    return _serve("index.html")


@router.get("/static/{name}")
async def static(name: str) -> Response:
    return _serve(name)


@router.get("/docs")
async def docs() -> Response:
    return _serve("docs.html")


@router.get("/docs/{name}")
async def docs_asset(name: str) -> Response:
    return _serve(name, _DOCS_ASSETS)
