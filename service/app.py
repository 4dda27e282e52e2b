"""The app factory: settings, the classifier, the batcher, routers and the one error-handler table.

The model is loaded by the lifespan in a background thread, so the server answers ``/healthz`` (200) and
``/readyz``/``/ping`` (503, "loading") while it loads; nothing heavy happens at import.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from service.config import Settings, get_settings
from service.errors import ServiceError
from service.http.limits import add_guards
from service.http.middleware import REQUEST_ID_HEADER, MetricsMiddleware, RequestIdMiddleware, current_request_id
from service.http.routes import explain, health, predict, sagemaker, tfserving, ui, v2
from service.inference.batching import Batcher
from service.inference.classifier import Classifier, ModelState
from service.inference.reload import ModelWatcher
from service.inference.runtime import inference_streams

log = logging.getLogger(__name__)

INTERNAL_ERROR = "internal server error"
CLIENT_CLOSED_REQUEST = 499


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    return JSONResponse({"error": exc.reason}, status_code=exc.status_code, headers=exc.headers or None)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else "request failed"
    return JSONResponse({"error": detail}, status_code=exc.status_code, headers=exc.headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(part) for part in first.get("loc", ()))
    return JSONResponse({"error": f"invalid request: {where} {first.get('msg', '')}".strip()}, status_code=422)


async def _client_gone(request: Request, exc: Exception) -> Response:
    """The client hung up mid-upload: not a server error; 499 (nginx's "client closed request") in the metrics."""
    log.info("client disconnected before sending the whole body of a %s request", request.method)
    return Response(status_code=CLIENT_CLOSED_REQUEST)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    route = getattr(request.scope.get("route"), "path", "unmatched")
    log.error("unhandled error on %s %s", request.method, route, exc_info=exc)
    # answered outside RequestIdMiddleware (Starlette's outermost handler), so the ID is added here
    return JSONResponse({"error": INTERNAL_ERROR}, status_code=500, headers={REQUEST_ID_HEADER: current_request_id()})


#: The one place where exceptions become HTTP answers: ``{"error": reason}`` with the exception's status.
ERROR_HANDLERS: dict[Any, Callable[[Request, Exception], Coroutine[Any, Any, Response]]] = {
    ServiceError: _service_error,
    HTTPException: _http_error,
    RequestValidationError: _validation_error,
    ClientDisconnect: _client_gone,
    Exception: _unexpected_error,
}


def _package_version() -> str:
    try:
        return version("mri-classifier")
    except PackageNotFoundError:
        return "0.0.0"


def create_app(settings: Settings | None = None, classifier: Classifier | None = None) -> FastAPI:
    """Build the service. A ``classifier`` that is already loaded (tests) is used as is; otherwise the
    lifespan starts loading it in a background thread."""
    settings = settings or get_settings()
    classifier = classifier if classifier is not None else Classifier(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher = Batcher(
            classifier.infer,  # one structured row per image: probabilities and ood_score
            max_batch_size=settings.max_batch_size,
            max_wait_ms=settings.max_wait_ms,
            max_queue_size=settings.max_queue_size,
            retry_after_s=settings.retry_after_s,
            workers=inference_streams(settings),
        )
        batcher.start()
        app.state.batcher = batcher
        if classifier.state is ModelState.IDLE:
            threading.Thread(target=classifier.load, name="mri-model-loader", daemon=True).start()
        watcher = ModelWatcher(classifier, settings.model_poll_interval_s)  # hot reload of new versions
        watcher.start()
        app.state.watcher = watcher
        try:
            yield
        finally:
            watcher.stop()
            batcher.stop(timeout=settings.graceful_shutdown_s)

    app = FastAPI(
        title="mri-classifier",
        version=_package_version(),
        description="Brain-tumour MRI slice classifier (glioma, meningioma, no tumour, pituitary). "
        "Research and decision-support demonstration: **not a diagnostic device**.",
        lifespan=lifespan,
        exception_handlers=ERROR_HANDLERS,
        docs_url=None,  # /docs is served offline by routes/ui.py (FastAPI's own loads Swagger UI from a CDN)
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.classifier = classifier
    add_guards(app, settings)  # concurrency limit, API key (when set), body and request deadlines
    app.add_middleware(MetricsMiddleware)
    if settings.cors_origins:  # CORS is off unless origins are configured
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "Accept", REQUEST_ID_HEADER],
            expose_headers=[REQUEST_ID_HEADER],
        )
    app.add_middleware(RequestIdMiddleware)  # outermost: every answer, a refusal by the guards too, carries it
    for router in (predict.router, explain.router, health.router, sagemaker.router, tfserving.router, ui.router):
        app.include_router(router)
    app.include_router(v2.router)  # the Open Inference Protocol (KServe V2)
    return app
