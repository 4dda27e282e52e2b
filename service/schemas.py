"""Response models (with the examples shown on /docs)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service import mime
from service.labels import CLASSES

_EXAMPLE_PROBS: dict[str, Any] = dict(zip(CLASSES, (0.912, 0.061, 0.004, 0.023), strict=True))


class InputCheck(BaseModel):
    """The non-MRI / unsure / unfamiliar warning of one image (``checks.input_check``): ``warning`` is true when the
    image is unlikely to be a brain MRI slice (colour, bright background), the model is unsure (low top probability)
    or the image is unlike the images the model was trained on (its ``ood_score``)."""

    warning: bool = Field(description="True when the result should not be trusted: see reasons.", examples=[False])
    likely_mri: bool = Field(description="False for colour images or images without a dark background.")
    confident: bool = Field(description="False when the top probability is under the model's threshold.")
    familiar: bool = Field(
        default=True,
        description="False when the image is unlike the images the model was trained on (ood_score over the "
        "model's threshold): the answer is then more often wrong.",
    )
    reasons: list[str] = Field(
        description="Failed checks: colour_image, bright_background, low_confidence, unlike_training.", examples=[[]]
    )
    message: str | None = Field(default=None, description="The reasons in words.", examples=[None])
    score: float = Field(description="All checks on one scale: above 1 exactly when warning is true.")
    colour_spread: float = Field(description="Mean (max - min) of the RGB channels, in [0, 1]; 0 for gray.")
    border_brightness: float = Field(description="Mean gray level of the image's outer frame, in [0, 1].")
    ood_score: float | None = Field(
        default=None,
        description="The model's distance from its training images (higher = less like them); null for a model "
        "exported without it.",
    )


class Prediction(BaseModel):
    """The classification of one image."""

    label: str = Field(description=f"Most probable class, one of {', '.join(CLASSES)}.", examples=["glioma"])
    confidence: float = Field(description="Probability of ``label``.", examples=[0.912])
    probabilities: dict[str, float] = Field(
        description="Probability of each class by name, in the model's class order; they sum to 1.",
        examples=[_EXAMPLE_PROBS],
    )
    check: InputCheck | None = Field(default=None, description="Non-MRI / unsure warning for this image.")


class PredictResponse(BaseModel):
    """Answer of ``POST /predict``: one prediction per uploaded image, in upload order."""

    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={
            "examples": [
                {
                    "model_name": "mri-classifier",
                    "model_version": 3,
                    "predictions": [{"label": "glioma", "confidence": 0.912, "probabilities": _EXAMPLE_PROBS}],
                }
            ]
        },
    )

    model_name: str = Field(examples=["mri-classifier"])
    model_version: int = Field(examples=[3])
    predictions: list[Prediction]


class ErrorResponse(BaseModel):
    """Every error body: a short, safe reason (TensorFlow Serving's error shape)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"error": "could not decode the JPEG image"}]})

    error: str


class Liveness(BaseModel):
    status: str = Field(default="alive", examples=["alive"])


class ModelStatus(BaseModel):
    """The model being served."""

    model_config = ConfigDict(protected_namespaces=())

    name: str = Field(examples=["mri-classifier"])
    version: int = Field(examples=[3])
    runtime: str = Field(examples=["openvino"])
    device: str = Field(examples=["CPU"])
    precision: str = Field(examples=["f32"])
    image_size: int = Field(examples=[224])
    classes: list[str] = Field(examples=[list(CLASSES)])
    load_seconds: float = Field(examples=[6.2])
    tta: str = Field(default="none", description="Test-time augmentation: none, or flip (mean with the mirror).")
    runtime_reason: str = Field(
        default="",
        description="Why this runtime and device: MRI_RUNTIME as set, or what auto found (a GPU TensorFlow can use, "
        "or why not).",
        examples=["openvino on CPU: no NVIDIA GPU visible; tensorflow-cpu has no CUDA build"],
    )


class ModelSourceStatus(BaseModel):
    """Where the served model comes from (``service.inference.model_source``)."""

    origin: str = Field(
        description="configured (MRI_MODEL_DIR, a mount, SageMaker's model.tar.gz) or built-in (the image's model).",
        examples=["built-in"],
    )
    model_dir: str = Field(description="The folder the model is loaded from.", examples=["/opt/mri-classifier/model"])
    waiting_for: str | None = Field(
        default=None,
        description="Only with MRI_BUILTIN_MODEL_UNTIL_TRAINED, while the built-in model serves: the model store "
        "whose first trained version will replace it.",
        examples=["/mnt/models"],
    )


class Readiness(BaseModel):
    """Answer of ``/readyz`` and ``/ping``: 200 only when the model is loaded and warm."""

    status: str = Field(description="idle, loading, ready or failed.", examples=["ready"])
    reason: str | None = Field(default=None, description="Why the model is not ready.", examples=[None])
    model: ModelStatus | None = None
    source: ModelSourceStatus | None = Field(default=None, description="Where the model is (being) loaded from.")


class TFServingPrediction(BaseModel):
    """TensorFlow Serving's row-format answer (``outputs`` instead when the request used ``inputs``)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"predictions": [[0.912, 0.061, 0.004, 0.023]]}]})

    predictions: list[list[float]] | None = None
    outputs: list[list[float]] | None = None
    checks: list[InputCheck] | None = Field(
        default=None, description="/invocations only: the non-MRI / unsure warning of each image, in order."
    )


class VersionStatus(BaseModel):
    version: str
    state: str
    status: dict[str, Any]


class TFServingModelStatus(BaseModel):
    """TensorFlow Serving's ``GET /v1/models/<name>`` answer."""

    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={
            "examples": [
                {
                    "model_version_status": [
                        {"version": "3", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
                    ]
                }
            ]
        },
    )

    model_version_status: list[VersionStatus]


#: OpenAPI schema of a binary body or form field.
BINARY: dict[str, Any] = {"type": "string", "format": "binary"}
#: OpenAPI schema of the one-image form field ``file``.
IMAGE_FILE_FIELD: dict[str, Any] = {**BINARY, "description": "One image: JPEG, PNG (8/16-bit) or DICOM."}


def image_request_body(
    form_fields: dict[str, dict[str, Any]],
    required: list[str] | None = None,
    extra_content: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """``openapi_extra`` of a route taking a multipart form with ``form_fields`` or one raw image body."""
    form: dict[str, Any] = {"type": "object", "properties": form_fields}
    if required:
        form["required"] = required
    content: dict[str, Any] = {mime.MULTIPART_FORM: {"schema": form}} if form_fields else {}
    content.update(extra_content or {})
    content.update({media: {"schema": BINARY} for media in sorted(mime.IMAGE_BODY_TYPES)})
    return {"requestBody": {"required": True, "content": content}}


#: Documented error answers, shared by the routes' ``responses=``.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Empty, truncated or undecodable image; malformed body."},
    406: {"model": ErrorResponse, "description": "The Accept header excludes application/json."},
    413: {"model": ErrorResponse, "description": "Body, image or image count over the limit."},
    415: {"model": ErrorResponse, "description": "Unsupported content type or image format."},
    422: {"model": ErrorResponse, "description": "Malformed instances or form fields."},
    503: {"model": ErrorResponse, "description": "Model not ready, or queue full (with Retry-After)."},
    401: {"model": ErrorResponse, "description": "An API key is configured and the request lacks it."},
    408: {"model": ErrorResponse, "description": "The body was not received within MRI_BODY_TIMEOUT_S."},
    504: {"model": ErrorResponse, "description": "Not answered within MRI_REQUEST_TIMEOUT_S."},
}
#: The answer of an unknown model name or version on the TensorFlow Serving routes.
NOT_FOUND_RESPONSE: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No model of that name or version is served."}
}
#: The 503 of a readiness route (``/readyz``, SageMaker's ``/ping``): the same body as its 200.
NOT_READY_RESPONSE: dict[int | str, dict[str, Any]] = {
    503: {"model": Readiness, "description": "Loading, or the model failed to load."}
}


class Explanation(BaseModel):
    """A Grad-CAM heatmap of one class, blended on the preprocessed image."""

    method: str = Field(examples=["grad-cam"])
    class_name: str = Field(description="The class explained (requested, else predicted).", examples=["glioma"])
    target_layer: str = Field(description="The convolutional layer the heatmap is computed on.")
    device: str = Field(description="Where the heatmap was computed.", examples=["CPU", "GPU:0"])
    heatmap_shape: list[int] = Field(description="[height, width] of the raw heatmap.", examples=[[7, 7]])
    overlay_png: str = Field(description="Base64 PNG: the heatmap colour-mapped and alpha-blended on image_png.")
    image_png: str = Field(description="Base64 PNG: the model input (decoded, padded to square, resized).")
    heatmap: list[list[float]] | None = Field(
        default=None, description="The raw heatmap in [0, 1] (with ?heatmap=true), rows top to bottom."
    )


class ExplainResponse(BaseModel):
    """Answer of ``POST /explain``: the same prediction as ``/predict`` plus its explanation."""

    model_config = ConfigDict(protected_namespaces=())

    model_name: str = Field(examples=["mri-classifier"])
    model_version: int = Field(examples=[3])
    prediction: Prediction
    explanation: Explanation
