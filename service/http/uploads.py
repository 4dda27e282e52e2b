"""Reading request bodies under a size limit, and multipart parsing kept entirely in memory.

Starlette's form parser spools uploads over 1 MB to a temporary file; uploaded scans must never touch the
disk, so multipart bodies are parsed here with python-multipart's streaming parser into bytes. File names
sent by clients are ignored: never stored, logged or returned.
"""

from __future__ import annotations

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from service import mime
from service.errors import BadRequestError, InvalidInputError, PayloadTooLargeError, UnsupportedMediaTypeError

FILE_FIELDS = ("file", "files")
_MAX_EXTRA_PARTS = 16


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or a 413 as soon as it (declared or streamed) exceeds ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"request body over the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"request body over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class _PartCollector:
    """python-multipart callbacks that gather each part's name and bytes in memory."""

    def __init__(self, max_parts: int) -> None:
        self.max_parts = max_parts
        self.parts: list[tuple[str, bytes]] = []
        self.ended = False
        self._field = b""
        self._value = b""
        self._headers: dict[bytes, bytes] = {}
        self._data: list[bytes] = []

    def on_part_begin(self) -> None:
        self._headers.clear()
        self._data.clear()

    def on_header_field(self, buf: bytes, start: int, end: int) -> None:
        self._field += buf[start:end]

    def on_header_value(self, buf: bytes, start: int, end: int) -> None:
        self._value += buf[start:end]

    def on_header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field, self._value = b"", b""

    def on_part_data(self, buf: bytes, start: int, end: int) -> None:
        self._data.append(buf[start:end])

    def on_part_end(self) -> None:
        if len(self.parts) >= self.max_parts:
            raise PayloadTooLargeError(f"too many parts in the form (limit {self.max_parts})")
        _, disposition = parse_options_header(self._headers.get(b"content-disposition", b""))
        self.parts.append((disposition.get(b"name", b"").decode("latin-1"), b"".join(self._data)))

    def on_end(self) -> None:
        self.ended = True


def parse_multipart(body: bytes, content_type: str, max_parts: int) -> list[tuple[str, bytes]]:
    """``(field name, content)`` of each part of a ``multipart/form-data`` body, in order."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise BadRequestError("multipart body without a boundary")
    collector = _PartCollector(max_parts)
    names = (
        "on_part_begin",
        "on_header_field",
        "on_header_value",
        "on_header_end",
        "on_part_data",
        "on_part_end",
        "on_end",
    )
    parser = MultipartParser(boundary, {name: getattr(collector, name) for name in names})  # type: ignore[arg-type]
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError:
        raise BadRequestError("malformed multipart body") from None
    if not collector.ended:
        raise BadRequestError("malformed multipart body (truncated)")
    return collector.parts


def image_files(body: bytes, content_type: str | None, max_images: int) -> list[bytes]:
    """The image files of a ``/predict`` request: form fields ``file``/``files``, or a raw image body."""
    ctype = mime.media_type(content_type)
    if ctype == mime.MULTIPART_FORM:
        parts = parse_multipart(body, content_type or "", max_images + _MAX_EXTRA_PARTS)
        files = [content for name, content in parts if name in FILE_FIELDS]
        if not files:
            raise InvalidInputError("no image: send it in the form field 'file' (or 'files' for several)")
    elif ctype in mime.IMAGE_BODY_TYPES:
        files = [body]
    else:
        raise UnsupportedMediaTypeError(
            f"unsupported content type {ctype or '(none)'}; send {mime.MULTIPART_FORM} or an image body"
        )
    if len(files) > max_images:
        raise PayloadTooLargeError(f"{len(files)} images in one request; the limit is {max_images}")
    return files
