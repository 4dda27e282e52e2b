"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from service import metrics
from service.http.deps import ClassifierDep
from service.inference import model_source
from service.inference.classifier import Classifier
from service.schemas import NOT_READY_RESPONSE, Liveness, ModelSourceStatus, ModelStatus, Readiness

router = APIRouter(tags=["health"])


def readiness(classifier: Classifier) -> JSONResponse:
    """200 with the model when it is loaded and warm, else 503 with the reason (``/readyz`` and ``/ping``)."""
    if classifier.ready:
        loaded = classifier.model
        info = loaded.info
        model = ModelStatus(**{**info.__dict__, "classes": list(info.classes)})
        source = _source(model_source.describe(classifier.settings, loaded.version_dir))
        body = Readiness(status=classifier.state.value, model=model, source=source)
        return JSONResponse(_dump(body), status_code=200)
    source = _source(model_source.describe(classifier.settings))
    body = Readiness(status=classifier.state.value, reason=classifier.reason, source=source)
    return JSONResponse(_dump(body), status_code=503)


def _source(where: model_source.ModelSource) -> ModelSourceStatus:
    waiting_for = str(where.waiting_for) if where.waiting_for is not None else None
    return ModelSourceStatus(origin=where.origin, model_dir=str(where.model_dir), waiting_for=waiting_for)


def _dump(body: Readiness) -> dict[str, object]:
    """The answer's JSON; ``source.waiting_for`` only when the built-in model serves until a store is trained."""
    waits = body.source is not None and body.source.waiting_for is not None
    return body.model_dump(exclude=None if waits else {"source": {"waiting_for"}})


@router.get("/healthz", response_model=Liveness, summary="Liveness: the process answers (no inference)")
async def healthz() -> Liveness:
    return Liveness()


@router.get(
    "/readyz",
    response_model=Readiness,
    responses=NOT_READY_RESPONSE,
    summary="Readiness: 200 only when the model is loaded and warmed up",
)
async def readyz(classifier: ClassifierDep) -> JSONResponse:
    return readiness(classifier)


@router.get("/metrics", response_class=Response, summary="Prometheus metrics (text exposition format)")
async def prometheus_metrics() -> Response:  # async: a scrape never waits for a worker thread
    content, content_type = metrics.exposition()
    return Response(content=content, media_type=content_type)
