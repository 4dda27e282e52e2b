"""Exceptions with a client-safe reason and the HTTP status each maps to.

Raised by decoding, batching and the model wrapper; translated to responses in one handler table
(``service.app``). Nothing here imports a web framework, so training can use the decoding errors too.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base class: ``reason`` is short and safe to return to a client."""

    status_code = 500

    def __init__(self, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.headers = headers or {}


class BadRequestError(ServiceError):
    """A request the service cannot parse (malformed JSON or multipart body)."""

    status_code = 400


class BadImageError(ServiceError):
    """Empty, truncated or undecodable image."""

    status_code = 400


class UnauthorizedError(ServiceError):
    """Missing or wrong credentials."""

    status_code = 401


class NotFoundError(ServiceError):
    """Unknown model name or version."""

    status_code = 404


class NotAcceptableError(ServiceError):
    """The client's ``Accept`` header asks for a type we cannot produce."""

    status_code = 406


class RequestTimeoutError(ServiceError):
    """The client did not send the whole body in time (slow uploads, slowloris)."""

    status_code = 408


class PayloadTooLargeError(ServiceError):
    """Body over the byte limit or image over the pixel limit (decompression bombs)."""

    status_code = 413


class UnsupportedMediaTypeError(ServiceError):
    """A content type or image format the service does not accept."""

    status_code = 415


class InvalidInputError(ServiceError):
    """Well-formed request whose content is wrong (JSON instances of the wrong shape, values out of range)."""

    status_code = 422


class ModelNotReadyError(ServiceError):
    """No usable model is loaded."""

    status_code = 503


class OverloadedError(ServiceError):
    """The batching queue is full; the client should retry later."""

    status_code = 503
