"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from service import metrics, model_source
from service.classifier import Classifier
from service.deps import ClassifierDep
from service.schemas import Liveness, ModelSourceStatus, ModelStatus, Readiness

router = APIRouter(tags=["health"])


def readiness(classifier: Classifier) -> JSONResponse:
    """200 with the model when it is loaded and warm, else 503 with the reason (``/readyz`` and ``/ping``)."""
    where = model_source.describe(classifier.settings)
    source = ModelSourceStatus(origin=where.origin, model_dir=str(where.model_dir))
    if classifier.ready:
        info = classifier.model.info
        model = ModelStatus(**{**info.__dict__, "classes": list(info.classes)})
        body = Readiness(status=classifier.state.value, model=model, source=source)
        return JSONResponse(body.model_dump(), status_code=200)
    body = Readiness(status=classifier.state.value, reason=classifier.reason, source=source)
    return JSONResponse(body.model_dump(), status_code=503)


@router.get("/healthz", response_model=Liveness, summary="Liveness: the process answers (no inference)")
async def healthz() -> Liveness:
    return Liveness()


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Loading, or the model failed to load."}},
    summary="Readiness: 200 only when the model is loaded and warmed up",
)
async def readyz(classifier: ClassifierDep) -> JSONResponse:
    return readiness(classifier)


@router.get("/metrics", response_class=Response, summary="Prometheus metrics (text exposition format)")
async def prometheus_metrics() -> Response:  # async: a scrape never waits for a worker thread
    content, content_type = metrics.exposition()
    return Response(content=content, media_type=content_type)
