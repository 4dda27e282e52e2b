"""``POST /predict``: classify uploaded images (multipart ``file``/``files``, or one raw image body)."""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service import mime
from service.checks import input_check
from service.http.deps import BatcherDep, ClassifierDep, SettingsDep
from service.http.uploads import image_files, read_body
from service.inference import pipeline
from service.protocols import codec, dicom_output
from service.schemas import BINARY, ERROR_RESPONSES, IMAGE_FILE_FIELD, PredictResponse, image_request_body

router = APIRouter(tags=["prediction"])

_REQUEST_BODY = image_request_body(
    {
        "file": IMAGE_FILE_FIELD,
        "files": {"type": "array", "items": BINARY, "description": "Several images."},
    }
)


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses={**ERROR_RESPONSES, 200: {"content": dicom_output.RESPONSE_CONTENT}},
    openapi_extra=_REQUEST_BODY,
    summary="Classify MRI slices",
    description="Upload images as multipart field `file` (or `files`, repeated) or as a raw image body. "
    "The format is detected from the bytes. For DICOM inputs, `?output=dicom` (or `Accept: multipart/related; "
    'type="application/dicom"`) answers a Comprehensive SR per image, filed in its study. '
    "Research and decision-support use only: not a diagnostic device.",
)
async def predict(
    request: Request,
    settings: SettingsDep,
    classifier: ClassifierDep,
    batcher: BatcherDep,
    output: dicom_output.OutputQuery = None,
) -> PredictResponse | Response:
    dicom = dicom_output.wants_dicom(request.headers.get("accept"), output)
    if not dicom:
        mime.require_json_accept(request.headers.get("accept"))
    model = classifier.model
    body = await read_body(request, settings.max_body_bytes)
    files = image_files(body, request.headers.get("content-type"), settings.max_images_per_request)
    sources = dicom_output.sources(files) if dicom else None
    decode = partial(codec.decode_files, files, model.preprocess, settings.max_pixels)
    _, probs, checks = await pipeline.classify_checked(
        batcher, model, len(files), decode, input_check.thresholds(model.metadata, settings)
    )
    answer = codec.attach_checks(codec.encode_predictions(probs, model.info), checks)
    if sources is not None:
        return await dicom_output.predict_answer(sources, answer, model)
    return answer
