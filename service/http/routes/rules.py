"""The one list of the service's routes, each with its kind, and the rules each kind follows.

The guards (``service.http.limits``: concurrency limit, authentication) take their paths from this list, and the
cross-cutting tests (security, limits, bad input, privacy) iterate over it: a new route gets the rules of its
kind, and those tests, by being listed here once (a test fails for an app route that is not listed).

* ``probe``: liveness and readiness; cheap, never refused by the concurrency limit, open without a key unless
  ``MRI_AUTH_EXEMPT_HEALTH=false``.
* ``metrics``: the Prometheus scrape; never refused, open unless ``MRI_AUTH_EXEMPT_METRICS=false``.
* ``page``: the web page, the API docs and their assets; they hold no data and are always open.
* ``status``: server and model metadata and status (no body); the key when one is set, the concurrency limit.
* ``inference``: a body with images; the key when one is set, the concurrency limit, the body read under
  ``MRI_MAX_BODY_BYTES`` and its deadline, any JSON parsed by :func:`parse_off_loop`, and the whole request served
  by one model snapshot (``classifier.model`` read once).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool

from service.inference import pipeline

T = TypeVar("T")


class Kind(Enum):
    PROBE = "probe"
    METRICS = "metrics"
    PAGE = "page"
    STATUS = "status"
    INFERENCE = "inference"


class Body(Enum):
    """What an inference route reads from its body."""

    IMAGE = "one image file as the body"
    MULTIPART = "image files in a multipart form"
    TFSERVING_JSON = "TF Serving JSON instances"
    OIP = "Open Inference Protocol JSON, or JSON then binary tensors"


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # as routed, with ``{name}``/``{version}`` placeholders
    kind: Kind
    bodies: frozenset[Body] = frozenset()


def _inference(method: str, path: str, *bodies: Body) -> Route:
    return Route(method, path, Kind.INFERENCE, frozenset(bodies))


ROUTES: tuple[Route, ...] = (
    Route("GET", "/healthz", Kind.PROBE),
    Route("GET", "/readyz", Kind.PROBE),
    Route("GET", "/ping", Kind.PROBE),
    Route("GET", "/v2/health/live", Kind.PROBE),
    Route("GET", "/v2/health/ready", Kind.PROBE),
    Route("GET", "/metrics", Kind.METRICS),
    Route("GET", "/", Kind.PAGE),
    Route("GET", "/static/{name}", Kind.PAGE),
    Route("GET", "/docs", Kind.PAGE),
    Route("GET", "/docs/{name}", Kind.PAGE),
    Route("GET", "/openapi.json", Kind.PAGE),
    Route("GET", "/v1/models/{name}", Kind.STATUS),
    Route("GET", "/v1/models/{name}/versions/{version}", Kind.STATUS),
    Route("GET", "/v2", Kind.STATUS),
    Route("GET", "/v2/models/{name}", Kind.STATUS),
    Route("GET", "/v2/models/{name}/versions/{version}", Kind.STATUS),
    Route("GET", "/v2/models/{name}/ready", Kind.STATUS),
    Route("GET", "/v2/models/{name}/versions/{version}/ready", Kind.STATUS),
    _inference("POST", "/predict", Body.MULTIPART, Body.IMAGE),
    _inference("POST", "/explain", Body.MULTIPART, Body.IMAGE),
    _inference("POST", "/invocations", Body.IMAGE, Body.TFSERVING_JSON),
    _inference("POST", "/v1/models/{name}:predict", Body.TFSERVING_JSON),
    _inference("POST", "/v1/models/{name}/versions/{version}:predict", Body.TFSERVING_JSON),
    _inference("POST", "/v2/models/{name}/infer", Body.OIP),
    _inference("POST", "/v2/models/{name}/versions/{version}/infer", Body.OIP),
)


def of_kind(*kinds: Kind) -> tuple[Route, ...]:
    """The listed routes of these kinds."""
    return tuple(route for route in ROUTES if route.kind in kinds)


def fixed_paths(kind: Kind) -> frozenset[str]:
    """The paths (without placeholders) of the routes of ``kind``."""
    return frozenset(route.path for route in of_kind(kind) if "{" not in route.path)


PROBE_PATHS = fixed_paths(Kind.PROBE)
(METRICS_PATH,) = fixed_paths(Kind.METRICS)


async def parse_off_loop(parse: Callable[..., T], *args: Any) -> T:
    """Run a body parser in a worker thread, under a decode slot: parsing a large JSON pixel batch costs what
    decoding an image does, so at most ``MRI_MAX_CONCURRENT_DECODES`` of either run at once, and the event loop
    (probes included) keeps answering meanwhile."""
    async with pipeline.decode_slots():
        return await run_in_threadpool(parse, *args)
