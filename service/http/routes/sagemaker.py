"""The SageMaker bring-your-own-container contract: ``GET /ping`` and ``POST /invocations``.

``/invocations`` takes one image as the body (``image/jpeg``, ``image/png``, ``application/x-image``,
``application/octet-stream``) or TF Serving JSON (``application/json``: ``{"instances": [...]}`` of
``{"b64": ...}`` or height x width x 3 pixel arrays, which is what the SageMaker TensorFlow client sends),
and always answers ``{"predictions": [[p_glioma, p_meningioma, p_no_tumor, p_pituitary], ...]}``.
"""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service import mime
from service.checks import input_check
from service.errors import UnsupportedMediaTypeError
from service.http.deps import BatcherDep, ClassifierDep, SettingsDep
from service.http.routes.health import readiness
from service.http.routes.tfserving import predict_json
from service.http.uploads import read_body
from service.inference import pipeline
from service.protocols import codec
from service.schemas import ERROR_RESPONSES, NOT_READY_RESPONSE, Readiness, TFServingPrediction, image_request_body

router = APIRouter(tags=["sagemaker"])


@router.get(
    "/ping",
    response_model=Readiness,
    responses=NOT_READY_RESPONSE,
    summary="SageMaker health check (the same truth as /readyz)",
)
async def ping(classifier: ClassifierDep) -> JSONResponse:
    return readiness(classifier)


@router.post(
    "/invocations",
    response_model=TFServingPrediction,
    responses=ERROR_RESPONSES,
    openapi_extra=image_request_body(
        {},
        extra_content={
            mime.JSON: {"schema": {"type": "object"}, "example": {"instances": [{"b64": "<base64 image>"}]}}
        },
    ),
    summary="SageMaker inference: one image body, or TF Serving JSON instances",
)
async def invocations(
    request: Request, settings: SettingsDep, classifier: ClassifierDep, batcher: BatcherDep
) -> JSONResponse:
    mime.require_json_accept(request.headers.get("accept"))
    model = classifier.model
    content_type = mime.media_type(request.headers.get("content-type"))
    if content_type != mime.JSON and content_type and content_type not in mime.IMAGE_BODY_TYPES:
        accepted = ", ".join(sorted({mime.JSON, *mime.IMAGE_BODY_TYPES}))
        raise UnsupportedMediaTypeError(f"unsupported content type {content_type}; send one of {accepted}")
    body = await read_body(request, settings.max_body_bytes)
    if content_type == mime.JSON:
        return JSONResponse(await predict_json(body, model, settings, batcher, with_checks=True))
    decode = partial(codec.decode_files, [body], model.preprocess, settings.max_pixels)
    _, probs, checks = await pipeline.classify_checked(
        batcher, model, 1, decode, input_check.thresholds(model.metadata, settings)
    )
    return JSONResponse({**codec.encode_tfserving(probs, "predictions"), **codec.tfserving_checks(checks)})
