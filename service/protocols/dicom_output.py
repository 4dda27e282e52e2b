"""DICOM results over HTTP for ``/predict`` and ``/explain``: whether a request asks for them, its DICOM inputs,
and the ``multipart/related; type="application/dicom"`` answer (one Part 10 object per part, as a DICOMweb
WADO-RS server answers).

A request asks for DICOM results with ``?output=dicom`` or with ``Accept: multipart/related;
type="application/dicom"`` ranked at least as high as JSON; JSON stays the default (no ``Accept``, ``*/*``).
Every input must then be DICOM (else 415: the results are filed in the input's study, which a JPEG has not).
``/predict`` answers one Comprehensive SR per image; ``/explain`` the SR and a Secondary Capture of its Grad-CAM
overlay. The objects live only in memory and in the answer (``Cache-Control: no-store``).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import Query
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from service import mime
from service.errors import UnsupportedMediaTypeError
from service.imaging import overlay
from service.inference.classifier import LoadedModel
from service.protocols.dicom_results import (
    Algorithm,
    SourceImage,
    new_uid,
    read_source,
    secondary_capture,
    structured_report,
)
from service.schemas import BINARY, Prediction, PredictResponse

DICOM_OUTPUT = "dicom"
MEDIA_TYPE = f'{mime.MULTIPART_RELATED}; type="{mime.DICOM}"'
_DICOM_MAGIC = (128, b"DICM")

OutputQuery = Annotated[
    Literal["json", "dicom"] | None,
    Query(
        description='`dicom`: answer DICOM objects (`multipart/related; type="application/dicom"`) for a DICOM '
        "input, filed in its study; the same as that Accept header. Default: JSON."
    ),
]
#: The 200 answer's extra content type, for the routes' ``responses=``.
RESPONSE_CONTENT: dict[str, dict[str, Any]] = {MEDIA_TYPE: {"schema": BINARY}}


def wants_dicom(accept: str | None, output: str | None) -> bool:
    """Whether to answer DICOM objects: ``?output=`` decides when given, else the ``Accept`` header does."""
    if output is not None:
        return output == DICOM_OUTPUT
    dicom_q, other_q = 0.0, 0.0
    for item in (accept or "").split(","):
        media, *params = (part.strip() for part in item.split(";"))
        quality, kind = 1.0, None
        for param in params:
            key, _, value = param.partition("=")
            key, value = key.strip().lower(), value.strip().strip('"').lower()
            if key == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
            elif key == "type":
                kind = value
        if media.lower() == mime.MULTIPART_RELATED and kind in (None, mime.DICOM):
            dicom_q = max(dicom_q, quality)
        elif media:
            other_q = max(other_q, quality)
    return dicom_q > 0 and dicom_q >= other_q


def sources(files: Sequence[bytes]) -> list[SourceImage]:
    """The headers of the request's images, read before the model runs; 415 for an image that is not DICOM."""
    offset, magic = _DICOM_MAGIC
    if any(data[offset : offset + len(magic)] != magic for data in files):
        raise UnsupportedMediaTypeError("DICOM results need a DICOM input (Part 10 file); send JSON for others")
    return [read_source(data) for data in files]


def multipart(parts: Sequence[bytes]) -> Response:
    """``multipart/related; type="application/dicom"`` with one Part 10 object per part."""
    boundary = uuid.uuid4().hex
    delimiter = f"--{boundary}".encode("ascii")
    header = f"\r\nContent-Type: {mime.DICOM}\r\n\r\n".encode("ascii")
    body = b"".join(delimiter + header + part + b"\r\n" for part in parts) + delimiter + b"--\r\n"
    return Response(body, media_type=f"{MEDIA_TYPE}; boundary={boundary}", headers={"Cache-Control": "no-store"})


def _algorithm(model: LoadedModel) -> Algorithm:
    return Algorithm.from_model(model.info.name, model.info.version, model.metadata)


def _reports(images: Sequence[SourceImage], answer: PredictResponse, algorithm: Algorithm) -> list[bytes]:
    """One SR per image; the SRs of one study share one new series."""
    series_uids: dict[str, str] = {}
    counts: Counter[str] = Counter()
    parts = []
    for source, prediction in zip(images, answer.predictions, strict=True):
        study = source.study_uid
        counts[study] += 1
        series_uid = series_uids.setdefault(study, new_uid())
        parts.append(structured_report(source, prediction, algorithm, series_uid, instance_number=counts[study]))
    return parts


async def predict_answer(images: Sequence[SourceImage], answer: PredictResponse, model: LoadedModel) -> Response:
    """``/predict``'s DICOM answer: a Comprehensive SR per image."""
    parts = await run_in_threadpool(_reports, images, answer, _algorithm(model))
    return multipart(parts)


def _explained(
    source: SourceImage, prediction: Prediction, image: np.ndarray, heat: np.ndarray, explained: str, model: LoadedModel
) -> list[bytes]:
    algorithm = _algorithm(model)
    report = structured_report(source, prediction, algorithm, new_uid(), explained=explained)
    capture = secondary_capture(source, overlay.blend(image, heat), algorithm, explained, new_uid())
    return [report, capture]


async def explain_answer(
    source: SourceImage, prediction: Prediction, image: np.ndarray, heat: np.ndarray, explained: str, model: LoadedModel
) -> Response:
    """``/explain``'s DICOM answer: the SR, then a Secondary Capture of the Grad-CAM overlay of ``explained``."""
    return multipart(await run_in_threadpool(_explained, source, prediction, image, heat, explained, model))
