"""The web page: ``GET /`` and its two assets, served from ``service/static`` (package data, no CDN).

Only the files listed here are served (no directory listing, no path from the request reaches the disk), with
a Content-Security-Policy that allows nothing from outside the service, so the page works air-gapped.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import Response

from service.errors import NotFoundError

router = APIRouter(include_in_schema=False)

STATIC_FOLDER = "static"
_ASSETS: dict[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
#: The page and its assets hold no data, so they stay reachable without credentials (the page asks for the API
#: key after a 401 from the API and sends it as ``X-API-Key``).
PAGE_PATHS: frozenset[str] = frozenset({"/", *(f"/{STATIC_FOLDER}/{name}" for name in _ASSETS)})
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@lru_cache(maxsize=len(_ASSETS))
def asset(name: str) -> bytes:
    """The bytes of one listed file of the page."""
    return files("service").joinpath(STATIC_FOLDER, name).read_bytes()


def _serve(name: str) -> Response:
    if name not in _ASSETS:
        raise NotFoundError("not found")
    return Response(asset(name), media_type=_ASSETS[name], headers=_HEADERS)


@router.get("/")
async def index() -> Response:
    return _serve("index.html")


@router.get("/static/{name}")
async def static(name: str) -> Response:
    return _serve(name)
