"""Media types, header names and SageMaker environment-variable names, each defined once.

Also the small amount of HTTP content negotiation the service needs (``Accept`` → JSON or 406,
``Content-Type`` → its bare media type). Nothing here imports a web framework.
"""

from __future__ import annotations

from service.errors import NotAcceptableError

# Media types.
JSON = "application/json"
JPEG = "image/jpeg"
PNG = "image/png"
X_IMAGE = "application/x-image"
OCTET_STREAM = "application/octet-stream"
DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"  # DICOMweb answers (STOW-RS, QIDO-RS)
MULTIPART_FORM = "multipart/form-data"
MULTIPART_RELATED = "multipart/related"

#: Bodies that hold exactly one image file (its real format is sniffed from the bytes).
IMAGE_BODY_TYPES: frozenset[str] = frozenset({JPEG, PNG, X_IMAGE, OCTET_STREAM, DICOM})

# Headers.
RETRY_AFTER = "Retry-After"
SAGEMAKER_CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"

# SageMaker bring-your-own-container environment variables (platform and toolkit conventions).
SAGEMAKER_BIND_TO_PORT = "SAGEMAKER_BIND_TO_PORT"
SAGEMAKER_SAFE_PORT_RANGE = "SAGEMAKER_SAFE_PORT_RANGE"
SAGEMAKER_MODEL_SERVER_TIMEOUT = "SAGEMAKER_MODEL_SERVER_TIMEOUT"
SAGEMAKER_MODEL_SERVER_WORKERS = "SAGEMAKER_MODEL_SERVER_WORKERS"
SAGEMAKER_CONTAINER_LOG_LEVEL = "SAGEMAKER_CONTAINER_LOG_LEVEL"
SAGEMAKER_MODEL_DIR = "/opt/ml/model"


def media_type(content_type: str | None) -> str:
    """The bare, lower-case media type of a ``Content-Type`` value (``""`` when absent)."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def _accepted_ranges(accept: str) -> list[tuple[str, float]]:
    ranges = []
    for item in accept.split(","):
        parts = [p.strip() for p in item.split(";")]
        if not parts[0]:
            continue
        quality = 1.0
        for param in parts[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        ranges.append((parts[0].lower(), quality))
    return ranges


def accepts_json(accept: str | None) -> bool:
    """Whether an ``Accept`` header admits ``application/json`` (absent or empty admits everything)."""
    if accept is None or not accept.strip():
        return True
    return any(quality > 0 and media in (JSON, "application/*", "*/*") for media, quality in _accepted_ranges(accept))


def require_json_accept(accept: str | None) -> None:
    """Raise a 406 unless the client accepts JSON, the only type the service answers with."""
    if not accepts_json(accept):
        raise NotAcceptableError(f"this endpoint answers {JSON} only")
