"""``POST /explain``: the prediction for one image plus a Grad-CAM heatmap of the requested or predicted class.

Decode -> predict is the same path as ``/predict`` (the batcher, so the probabilities are identical); the
heatmap comes from the model's ``gradcam`` signature (``service.inference.explain``) in a worker thread, then is
colour-mapped and blended on the model input (``service.imaging.overlay``). The answer is JSON with the overlay and the
model input as base64 PNGs (and the raw heatmap with ``?heatmap=true``), or the overlay PNG itself when the
client sends ``Accept: image/png``, or DICOM objects with ``?output=dicom`` (``service.protocols.dicom_output``).
"""

from __future__ import annotations

import base64
import threading
from functools import partial
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from service import mime
from service.checks import input_check
from service.errors import InvalidInputError, NotAcceptableError, PayloadTooLargeError, UnsupportedMediaTypeError
from service.http.deps import BatcherDep, ClassifierDep, SettingsDep
from service.http.uploads import parse_multipart, read_body
from service.imaging import overlay
from service.inference import pipeline
from service.inference.explain import METHOD, TARGET_LAYER, Explainer
from service.labels import CLASSES, UnknownLabelError, canonical_label
from service.protocols import codec, dicom_output
from service.schemas import (
    BINARY,
    ERROR_RESPONSES,
    IMAGE_FILE_FIELD,
    ExplainResponse,
    Explanation,
    InputCheck,
    image_request_body,
)

router = APIRouter(tags=["explanation"])

CLASS_FIELD = "class_name"
_NO_STORE = {"Cache-Control": "no-store"}
_explainer_lock = threading.Lock()

_REQUEST_BODY = image_request_body(
    {
        "file": IMAGE_FILE_FIELD,
        CLASS_FIELD: {"type": "string", "enum": list(CLASSES), "description": "Class to explain."},
    },
    required=["file"],
)
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {mime.PNG: {"schema": BINARY}, **dicom_output.RESPONSE_CONTENT},
        "description": "JSON by default; the overlay PNG itself with `Accept: image/png`; a DICOM SR and Secondary "
        "Capture with `?output=dicom` (DICOM input).",
    },
    **ERROR_RESPONSES,
    501: {"model": ERROR_RESPONSES[400]["model"], "description": "The model has no gradcam signature."},
}


async def _explainer(request: Request) -> Explainer:
    """One ``Explainer`` per app, made on first use; async so it never waits in the thread pool behind decodes."""
    state = request.app.state
    with _explainer_lock:
        if getattr(state, "explainer", None) is None:
            state.explainer = Explainer()
        explainer: Explainer = state.explainer
    return explainer


ExplainerDep = Annotated[Explainer, Depends(_explainer)]


def wants_png(accept: str | None) -> bool:
    """``True`` for the overlay PNG, ``False`` for JSON (the default), or a 406 when neither is accepted."""
    if not accept or not accept.strip():
        return False
    quality: dict[str, float] = {}
    for item in (accept or "").split(","):
        media, *params = (part.strip().lower() for part in item.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        quality[media] = max(q, quality.get(media, 0.0))
    png = quality.get(mime.PNG, quality.get("image/*", 0.0))
    json_q = quality.get(mime.JSON, quality.get("application/*", quality.get("*/*", 0.0)))
    if png <= 0 and json_q <= 0:
        raise NotAcceptableError(f"this endpoint answers {mime.JSON} or {mime.PNG}")
    return png > 0 and png >= json_q


def upload(body: bytes, content_type: str | None) -> tuple[bytes, str | None]:
    """The one image of an ``/explain`` request and the form's ``class_name`` (when sent)."""
    ctype = mime.media_type(content_type)
    if ctype in mime.IMAGE_BODY_TYPES:
        return body, None
    if ctype != mime.MULTIPART_FORM:
        raise UnsupportedMediaTypeError(
            f"unsupported content type {ctype or '(none)'}; send {mime.MULTIPART_FORM} or an image body"
        )
    parts = parse_multipart(body, content_type or "", max_parts=8)
    files = [content for name, content in parts if name in ("file", "files")]
    if not files:
        raise InvalidInputError("no image: send it in the form field 'file'")
    if len(files) > 1:
        raise PayloadTooLargeError("/explain takes one image per request")
    names = [content for name, content in parts if name == CLASS_FIELD]
    return files[0], names[-1].decode("utf-8", "replace").strip() if names else None


def class_index(query: str | None, form: str | None) -> int | None:
    """The index of the class to explain (``None`` = the predicted class); 422 for a name not in the labels."""
    given = {name for name in (query, form) if name}
    if len(given) > 1:
        raise InvalidInputError("class_name given twice with different values")
    if not given:
        return None
    try:
        return CLASSES.index(canonical_label(given.pop()))
    except UnknownLabelError:
        raise InvalidInputError(f"unknown class_name; choose one of {', '.join(CLASSES)}") from None


def _render(image: np.ndarray, heat: np.ndarray) -> tuple[bytes, bytes]:
    """(overlay PNG, model-input PNG) for one image [S, S, 3] and its heatmap [h, w]."""
    return overlay.png_bytes(overlay.blend(image, heat)), overlay.png_bytes(image)


@router.post(
    "/explain",
    response_model=ExplainResponse,
    responses=_RESPONSES,
    openapi_extra=_REQUEST_BODY,
    summary="Classify one MRI slice and explain it with a Grad-CAM heatmap",
    description="Upload one image (multipart field `file`, or a raw JPEG/PNG/DICOM body). The answer holds the "
    "same prediction as `/predict`, the non-MRI/unsure check, and a Grad-CAM heatmap of `class_name` (query or "
    "form field; default: the predicted class) blended on the preprocessed image, as base64 PNGs; "
    "`?heatmap=true` adds the raw heatmap. `Accept: image/png` returns the overlay PNG alone. For a DICOM input, "
    "`?output=dicom` returns a Comprehensive SR and a Secondary Capture of the overlay, filed in its study. "
    "Research and decision-support use only: not a diagnostic device.",
)
async def explain(
    request: Request,
    settings: SettingsDep,
    classifier: ClassifierDep,
    batcher: BatcherDep,
    explainer: ExplainerDep,
    class_name: Annotated[
        str | None, Query(description=f"Class to explain, one of {', '.join(CLASSES)}; default: the predicted one.")
    ] = None,
    heatmap: Annotated[bool, Query(description="Also return the raw heatmap as a list of rows.")] = False,
    output: dicom_output.OutputQuery = None,
) -> Response:
    dicom = dicom_output.wants_dicom(request.headers.get("accept"), output)
    png = not dicom and wants_png(request.headers.get("accept"))
    model = classifier.model
    body = await read_body(request, settings.max_body_bytes)
    data, form_class = upload(body, request.headers.get("content-type"))
    target = class_index(class_name, form_class)
    source = dicom_output.sources([data])[0] if dicom else None
    decode = partial(codec.decode_files, [data], model.preprocess, settings.max_pixels)
    images, probs, checks = await pipeline.classify_checked(
        batcher, model, 1, decode, input_check.thresholds(model.metadata, settings)
    )
    chosen = int(np.argmax(probs[0])) if target is None else target
    heat, device = await run_in_threadpool(explainer.heatmaps, model, images, np.array([chosen]))
    overlay_png, image_png = await run_in_threadpool(_render, images[0], heat[0])
    predicted = codec.encode_predictions(probs, model.info)
    prediction = predicted.predictions[0]
    prediction.check = InputCheck(**checks[0].to_dict())
    if source is not None:
        return await dicom_output.explain_answer(source, prediction, images[0], heat[0], CLASSES[chosen], model)
    if png:
        headers = {
            **_NO_STORE,
            "X-Predicted-Class": prediction.label,
            "X-Explained-Class": CLASSES[chosen],
            "X-Input-Warning": str(checks[0].warning).lower(),
        }
        return Response(overlay_png, media_type=mime.PNG, headers=headers)
    answer = ExplainResponse(
        model_name=predicted.model_name,
        model_version=predicted.model_version,
        prediction=prediction,
        explanation=Explanation(
            method=METHOD,
            class_name=CLASSES[chosen],
            target_layer=TARGET_LAYER,
            device=device,
            heatmap_shape=list(heat[0].shape),
            overlay_png=base64.b64encode(overlay_png).decode("ascii"),
            image_png=base64.b64encode(image_png).decode("ascii"),
            heatmap=np.round(heat[0], 4).tolist() if heatmap else None,
        ),
    )
    return JSONResponse(answer.model_dump(mode="json"), headers=_NO_STORE)
