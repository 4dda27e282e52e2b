"""TensorFlow Serving REST compatibility: ``POST /v1/models/<name>[/versions/<v>]:predict`` and model status.

The request body is always read as JSON (TF Serving ignores Content-Type, and ``curl -d`` sends a form type).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service import mime
from service.checks import input_check
from service.config import Settings
from service.errors import NotFoundError
from service.http.deps import BatcherDep, ClassifierDep, SettingsDep
from service.http.routes.rules import parse_off_loop
from service.http.uploads import read_body
from service.inference import pipeline
from service.inference.batching import Batcher
from service.inference.classifier import Classifier, LoadedModel, ModelState
from service.protocols import codec
from service.schemas import ERROR_RESPONSES, NOT_FOUND_RESPONSE, TFServingModelStatus, TFServingPrediction

router = APIRouter(prefix="/v1/models", tags=["tensorflow-serving"])

_JSON_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            mime.JSON: {
                "schema": {"type": "object"},
                "examples": {
                    "pixels": {"value": {"instances": [[[[0, 0, 0], [255, 255, 255]], [[12, 12, 12], [0, 0, 0]]]]}},
                    "b64": {"value": {"instances": [{"b64": "<base64 of a JPEG/PNG/DICOM file>"}]}},
                },
            }
        },
    }
}


async def predict_json(
    body: bytes, model: LoadedModel, settings: Settings, batcher: Batcher, with_checks: bool = False
) -> dict[str, Any]:
    """A TF Serving JSON request body -> ``{"predictions": [[...4 probabilities], ...]}`` (shared with SageMaker;
    ``with_checks`` adds the non-MRI/unsure ``checks`` beside them)."""
    instances, key = await parse_off_loop(
        codec.parse_instances, body, settings.max_images_per_request, settings.max_pixels
    )
    decode = partial(codec.decode_instances, instances, model.preprocess, settings.max_pixels)
    _, probs, checks = await pipeline.classify_checked(
        batcher, model, len(instances), decode, input_check.thresholds(model.metadata, settings)
    )
    answer: dict[str, Any] = codec.encode_tfserving(probs, key)
    return {**answer, **codec.tfserving_checks(checks)} if with_checks else answer


def _servable(classifier: Classifier, name: str, version: str | None) -> LoadedModel:
    model = classifier.model
    if name != model.info.name or (version is not None and version != str(model.info.version)):
        spec = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
        raise NotFoundError(f"Servable not found for request: {spec}")
    return model


async def _predict(
    request: Request, name: str, version: str | None, settings: Settings, classifier: Classifier, batcher: Batcher
) -> JSONResponse:
    mime.require_json_accept(request.headers.get("accept"))
    model = _servable(classifier, name, version)
    body = await read_body(request, settings.max_body_bytes)
    return JSONResponse(await predict_json(body, model, settings, batcher))


@router.post(
    "/{name}:predict",
    response_model=TFServingPrediction,
    responses={**ERROR_RESPONSES, **NOT_FOUND_RESPONSE},
    openapi_extra=_JSON_BODY,
    summary="TF Serving predict (latest version)",
)
async def predict_latest(
    name: str, request: Request, settings: SettingsDep, classifier: ClassifierDep, batcher: BatcherDep
) -> JSONResponse:
    return await _predict(request, name, None, settings, classifier, batcher)


@router.post(
    "/{name}/versions/{version}:predict",
    response_model=TFServingPrediction,
    responses={**ERROR_RESPONSES, **NOT_FOUND_RESPONSE},
    openapi_extra=_JSON_BODY,
    summary="TF Serving predict (a specific version)",
)
async def predict_version(
    name: str, version: str, request: Request, settings: SettingsDep, classifier: ClassifierDep, batcher: BatcherDep
) -> JSONResponse:
    return await _predict(request, name, version, settings, classifier, batcher)


def _status(classifier: Classifier, name: str, version: str | None) -> TFServingModelStatus:
    if classifier.ready:
        model = _servable(classifier, name, version)
        entry = {
            "version": str(model.info.version),
            "state": "AVAILABLE",
            "status": {"error_code": "OK", "error_message": ""},
        }
    elif classifier.state is ModelState.FAILED:
        entry = {
            "version": version or "0",
            "state": "END",
            "status": {"error_code": "UNAVAILABLE", "error_message": classifier.reason or ""},
        }
    else:
        entry = {"version": version or "0", "state": "LOADING", "status": {"error_code": "OK", "error_message": ""}}
    return TFServingModelStatus.model_validate({"model_version_status": [entry]})


@router.get(
    "/{name}", response_model=TFServingModelStatus, responses=NOT_FOUND_RESPONSE, summary="TF Serving model status"
)
async def model_status(name: str, classifier: ClassifierDep) -> TFServingModelStatus:
    return _status(classifier, name, None)


@router.get(
    "/{name}/versions/{version}",
    response_model=TFServingModelStatus,
    responses=NOT_FOUND_RESPONSE,
    summary="TF Serving version status",
)
async def version_status(name: str, version: str, classifier: ClassifierDep) -> TFServingModelStatus:
    return _status(classifier, name, version)
