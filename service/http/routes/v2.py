"""The Open Inference Protocol (KServe V2) REST API, beside the other routes and on the same decode -> predict ->
encode path: ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``, ``/v2/models/<name>[/versions/<v>]``
(metadata), ``.../ready`` and ``POST .../infer`` (see :mod:`service.protocols.oip` for the tensors and extensions).
Errors are ``{"error": reason}`` with a 4xx (503 while the model is not ready), as the protocol specifies; the
ready endpoints answer 400 while the model is not ready (the protocol's "4xx means false", as Triton does).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from service import mime
from service.checks import input_check
from service.config import Settings
from service.errors import ModelNotReadyError, NotFoundError
from service.http.deps import BatcherDep, ClassifierDep, SettingsDep
from service.http.routes.rules import parse_off_loop
from service.http.uploads import read_body
from service.inference import pipeline
from service.inference.batching import Batcher
from service.inference.classifier import Classifier, LoadedModel
from service.protocols import oip
from service.schemas import ERROR_RESPONSES, NOT_FOUND_RESPONSE

router = APIRouter(prefix="/v2", tags=["open-inference-protocol"])

_NOT_READY: dict[int | str, dict[str, Any]] = {503: ERROR_RESPONSES[503]}
_READY_FALSE: dict[int | str, dict[str, Any]] = {
    400: {"model": ERROR_RESPONSES[400]["model"], "description": "Not ready: loading, or the model failed to load."}
}
_INFER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            mime.JSON: {
                "schema": {"type": "object"},
                "example": {
                    "inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": ["<base64 JPEG>"]}],
                    "outputs": [{"name": "probabilities", "parameters": {"classification": 2}}],
                },
            },
            mime.OCTET_STREAM: {
                "schema": {"type": "string", "format": "binary"},
                "description": f"JSON header then binary tensor data; send {oip.HEADER_LENGTH}.",
            },
        },
    }
}


@router.get("", response_model=oip.ServerMetadata, summary="Server metadata (Open Inference Protocol)")
async def server_metadata(request: Request) -> oip.ServerMetadata:
    return oip.ServerMetadata(name="mri-classifier", version=request.app.version, extensions=list(oip.EXTENSIONS))


@router.get("/health/live", summary="Server live: the process answers (no inference)")
async def server_live() -> dict[str, bool]:
    return {"live": True}


@router.get(
    "/health/ready",
    responses={400: {"description": '`{"ready": false}`: loading, or the model failed to load.'}},
    summary="Server ready: 200 only when the model is loaded and warm, else 400",
)
async def server_ready(classifier: ClassifierDep) -> JSONResponse:
    return JSONResponse({"ready": classifier.ready}, status_code=200 if classifier.ready else 400)


def _model(classifier: Classifier, name: str, version: str | None) -> LoadedModel:
    """The served model (503 while it loads), or a 404 for another name or version."""
    model = classifier.model
    if name != model.info.name:
        raise NotFoundError(f"unknown model {name!r}; this server serves {model.info.name!r}")
    if version is not None and version != str(model.info.version):
        raise NotFoundError(f"model {name!r} has no version {version!r}; it serves version {model.info.version}")
    return model


@router.get(
    "/models/{name}",
    response_model=oip.ModelMetadata,
    responses={**_NOT_READY, **NOT_FOUND_RESPONSE},
    summary="Model metadata",
)
async def model_metadata(name: str, classifier: ClassifierDep) -> oip.ModelMetadata:
    return oip.model_metadata(_model(classifier, name, None).info)


@router.get(
    "/models/{name}/versions/{version}",
    response_model=oip.ModelMetadata,
    responses={**_NOT_READY, **NOT_FOUND_RESPONSE},
    summary="Model version metadata",
)
async def version_metadata(name: str, version: str, classifier: ClassifierDep) -> oip.ModelMetadata:
    return oip.model_metadata(_model(classifier, name, version).info)


def _ready(classifier: Classifier, name: str, version: str | None) -> JSONResponse:
    """200 when the model is ready, 400 with the reason while it is not, 404 for another name or version."""
    try:
        model = _model(classifier, name, version)
    except ModelNotReadyError as exc:
        return JSONResponse({"error": exc.reason}, status_code=400)
    return JSONResponse({"name": model.info.name, "ready": True})


@router.get("/models/{name}/ready", responses={**_READY_FALSE, **NOT_FOUND_RESPONSE}, summary="Model ready")
async def model_ready(name: str, classifier: ClassifierDep) -> JSONResponse:
    return _ready(classifier, name, None)


@router.get(
    "/models/{name}/versions/{version}/ready",
    responses={**_READY_FALSE, **NOT_FOUND_RESPONSE},
    summary="Model version ready",
)
async def version_ready(name: str, version: str, classifier: ClassifierDep) -> JSONResponse:
    return _ready(classifier, name, version)


async def _infer(
    request: Request, name: str, version: str | None, settings: Settings, classifier: Classifier, batcher: Batcher
) -> Response:
    model = _model(classifier, name, version)
    header_length = oip.check_headers(
        request.headers.getlist(oip.HEADER_LENGTH), request.headers.getlist(oip.CONTENT_ENCODING)
    )
    body = await read_body(request, settings.max_body_bytes)
    parsed = await parse_off_loop(
        oip.parse_request,
        body,
        header_length,
        settings.max_images_per_request,
        settings.max_pixels,
    )
    decode = partial(oip.decode, parsed, model.preprocess, settings.max_pixels)
    _, probs, checks = await pipeline.classify_checked(
        batcher, model, parsed.count, decode, input_check.thresholds(model.metadata, settings)
    )
    head, tail = oip.encode(probs, checks, model.info, parsed)
    if tail is None:
        return Response(head, media_type=mime.JSON)
    return Response(head + tail, media_type=mime.OCTET_STREAM, headers={oip.HEADER_LENGTH: str(len(head))})


_INFER_RESPONSES: dict[int | str, dict[str, Any]] = {**ERROR_RESPONSES, **NOT_FOUND_RESPONSE}


@router.post(
    "/models/{name}/infer",
    response_model=oip.InferenceResponse,
    responses=_INFER_RESPONSES,
    openapi_extra=_INFER_BODY,
    summary="Inference (latest version)",
)
async def infer(
    name: str, request: Request, settings: SettingsDep, classifier: ClassifierDep, batcher: BatcherDep
) -> Response:
    return await _infer(request, name, None, settings, classifier, batcher)


@router.post(
    "/models/{name}/versions/{version}/infer",
    response_model=oip.InferenceResponse,
    responses=_INFER_RESPONSES,
    openapi_extra=_INFER_BODY,
    summary="Inference (a specific version)",
)
async def infer_version(
    name: str, version: str, request: Request, settings: SettingsDep, classifier: ClassifierDep, batcher: BatcherDep
) -> Response:
    return await _infer(request, name, version, settings, classifier, batcher)
