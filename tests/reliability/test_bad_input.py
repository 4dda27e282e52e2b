"""The bad-input corpus: over 40 kinds of bad request to every inference route of the service's list
(``service.http.routes.rules``: ``/predict``, ``/explain``, ``/invocations``, TF Serving and the Open Inference
Protocol), each made here.

Every bad request gets its 4xx with a short JSON reason (never a 5xx), and a good request on the same route
succeeds right after it. Awkward but valid images (CMYK, 16-bit, palette with transparency, huge EXIF, a JPEG
named .png...) are accepted. Over-limit bodies sent in chunks or with a lying Content-Length, and slow bodies,
go to a real server over raw sockets (marked slow).
"""

from __future__ import annotations

import base64
import json
import resource
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.http.routes.rules import Body
from tests.reliability import payloads, routes
from tests.reliability.conftest import LIVE_BODY_TIMEOUT_S, LIVE_MAX_BODY_BYTES
from tests.reliability.server import ServerProcess, rss_bytes
from tests.service.conftest import MODEL_NAME

TF_PREDICT = f"/v1/models/{MODEL_NAME}:predict"
V2_INFER = f"/v2/models/{MODEL_NAME}/infer"
#: Every inference route, each sent files the way it takes them (``routes.file_request``).
FILE_ROUTES = {routes.path_of(route): route for route in routes.INFERENCE}
INFERENCE_PATHS = list(FILE_ROUTES)
MAX_REASON = 200

# ------------------------------------------------------------------------------------------------ helpers


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def send_file(
    client: TestClient, path: str, data: bytes, filename: str = "scan.jpg", content_type: str = "image/jpeg"
) -> httpx.Response:
    """One image file the way the route at ``path`` takes it (a multipart upload, a raw body, a b64 instance
    or an ``image_files`` tensor)."""
    method, url, kwargs = routes.file_request(FILE_ROUTES[path], data, filename, content_type)
    return client.request(method, url, **kwargs)


def probabilities(response: httpx.Response) -> list[list[float]]:
    return routes.probabilities(response.json())


def assert_error(response: httpx.Response, status: int, fragment: str) -> None:
    """The expected 4xx, as ``{"error": "<short reason>"}``."""
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    assert fragment in body["error"], body["error"]
    assert 0 < len(body["error"]) <= MAX_REASON and "Traceback" not in body["error"]


def assert_serves(client: TestClient, path: str = "/predict") -> None:
    """A good request right after a bad one is answered."""
    response = send_file(client, path, payloads.good_jpeg())
    assert response.status_code == 200, response.text
    assert len(probabilities(response)) == 1


def pixels(height: int = 16, width: int = 16, value: float = 80.0) -> list[Any]:
    return np.full((height, width, 3), value).tolist()


# ---------------------------------------------------------------------------------- bad files, every route


@pytest.mark.parametrize("path", INFERENCE_PATHS)
@pytest.mark.parametrize("name", list(payloads.BAD_FILES))
def test_bad_file(corpus_client: TestClient, path: str, name: str) -> None:
    factory, status, fragment = payloads.BAD_FILES[name]
    assert_error(send_file(corpus_client, path, factory()), status, fragment)
    assert_serves(corpus_client, path)


@pytest.mark.parametrize("path", INFERENCE_PATHS)
@pytest.mark.parametrize("name", list(payloads.AWKWARD_GOOD_FILES))
def test_awkward_valid_image_is_accepted(corpus_client: TestClient, path: str, name: str) -> None:
    response = send_file(corpus_client, path, payloads.AWKWARD_GOOD_FILES[name]())
    assert response.status_code == 200, response.text
    (row,) = probabilities(response)
    assert sum(row) == pytest.approx(1.0, abs=1e-4)


def test_a_long_thin_image_does_not_allocate_its_square(corpus_client: TestClient) -> None:
    """Regression: a 1.3 KB JPEG of 32576 x 64 pixels was padded to a 32576^2 square (3.2 GB) before its
    resize, and a few of them got the server killed for memory. Now the peak stays small."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for data in (payloads.long_thin_png(30000, 8), payloads.long_thin_png(8, 30000)):
        assert send_file(corpus_client, "/invocations", data).status_code == 200
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before < 200 << 20


@pytest.mark.parametrize(
    "path", [path for path, route in FILE_ROUTES.items() if route.bodies & {Body.MULTIPART, Body.IMAGE}]
)
def test_the_format_comes_from_the_bytes_not_the_name_or_type(corpus_client: TestClient, path: str) -> None:
    jpeg, png = payloads.good_jpeg(), payloads.good_png()
    honest = [
        probabilities(send_file(corpus_client, path, data, name, kind))
        for data, name, kind in ((jpeg, "scan.jpg", "image/jpeg"), (png, "scan.png", "image/png"))
    ]
    jpeg_named_png = send_file(corpus_client, path, jpeg, "scan.png", "image/png")
    png_named_jpeg = send_file(corpus_client, path, png, "scan.jpg", "image/jpeg")
    assert jpeg_named_png.status_code == 200 and png_named_jpeg.status_code == 200
    assert probabilities(jpeg_named_png) == honest[0]
    assert probabilities(png_named_jpeg) == honest[1]


# ------------------------------------------------------------------------------------- bad JSON requests


def _json(value: object) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


def _with_first_pixel(literal: bytes) -> bytes:
    """A 16 x 16 instance whose first value is written as ``literal`` (JSON that json.dumps cannot make)."""
    return _json({"instances": [pixels()]}).replace(b"80.0", literal, 1)


#: name -> (raw body, expected status, fragment of the reason): bad JSON, whatever the format.
COMMON_JSON_CASES: dict[str, tuple[Callable[[], bytes], int, str]] = {
    "malformed JSON": (lambda: b'{"instances": [', 400, "malformed JSON"),
    "empty JSON body": (lambda: b"", 400, "empty JSON body"),
    "invalid UTF-8": (lambda: b'{"instances": "\xff\xfe"}', 400, "malformed JSON"),
    "nesting bomb": (lambda: b"[" * 100_000 + b"]" * 100_000, 413, "more arrays or objects than a batch"),
    "4300-digit number": (lambda: b'{"instances": [' + b"9" * 5000 + b"]}", 400, "malformed JSON"),
}

#: The same, in the TF Serving format (``/invocations`` with JSON, ``/v1/models/...:predict``).
JSON_CASES: dict[str, tuple[Callable[[], bytes], int, str]] = {
    **COMMON_JSON_CASES,
    "top-level list": (lambda: b"[1, 2, 3]", 422, "JSON object"),
    "top-level string": (lambda: b'"instances"', 422, "JSON object"),
    "null": (lambda: b"null", 422, "JSON object"),
    "empty object": (lambda: b"{}", 422, "exactly one of"),
    "instances and inputs": (lambda: _json({"instances": [pixels()], "inputs": [pixels()]}), 422, "exactly one of"),
    "instances not a list": (lambda: _json({"instances": "abc"}), 422, "non-empty list"),
    "empty instances": (lambda: _json({"instances": []}), 422, "non-empty list"),
    "unknown signature_name": (lambda: _json({"signature_name": "x", "instances": [pixels()]}), 422, "signature"),
    "columnar inputs with another key": (lambda: _json({"inputs": {"pixels": [pixels()]}}), 422, "columnar"),
    "instance is a number": (lambda: _json({"instances": [5]}), 422, "expected [height, width, 3]"),
    "2-D pixel array": (lambda: _json({"instances": [[[0] * 16] * 16]}), 422, "expected [height, width, 3]"),
    "4 channels": (lambda: _json({"instances": [np.zeros((16, 16, 4)).tolist()]}), 422, "expected [height, width"),
    "zero-size image": (lambda: _json({"instances": [[[]]]}), 422, "expected [height, width, 3]"),
    "1x1 pixel array": (lambda: _json({"instances": [pixels(1, 1)]}), 422, "at least 8 pixels"),
    "ragged rows": (lambda: _json({"instances": [[[[0, 0, 0]], [[0, 0, 0], [1, 1, 1]]]]}), 422, "numeric array"),
    "strings as pixels": (lambda: _json({"instances": [[[["a", "b", "c"]] * 16] * 16]}), 422, "numeric array"),
    "NaN pixels": (lambda: _json({"instances": [pixels(value=float("nan"))]}), 422, "outside [0, 255]"),
    "Infinity pixels": (lambda: _json({"instances": [pixels(value=float("inf"))]}), 422, "outside [0, 255]"),
    "1e400 pixels": (lambda: _with_first_pixel(b"1e400"), 422, "outside [0, 255]"),
    "400-digit integer pixel": (lambda: _with_first_pixel(b"1" + b"0" * 400), 422, "outside [0, 255]"),
    "negative pixels": (lambda: _json({"instances": [pixels(value=-1)]}), 422, "outside [0, 255]"),
    "pixels over 255": (lambda: _json({"instances": [pixels(value=256)]}), 422, "outside [0, 255]"),
    "pixel array over the pixel limit": (lambda: _json({"instances": [pixels(600, 500, 0)]}), 413, "pixels"),
    "too many instances": (lambda: _json({"instances": [pixels()] * 9}), 413, "the limit is 8"),
    "b64 that is not base64": (lambda: _json({"instances": [{"b64": "@@@ not base64 @@@"}]}), 422, "base64"),
    "b64 with a non-ASCII character": (lambda: _json({"instances": [{"b64": "é" * 8}]}), 422, "base64"),
    "b64 not a string": (lambda: _json({"instances": [{"b64": 12}]}), 422, '{"b64"'),
    "b64 with an extra key": (lambda: _json({"instances": [{"b64": b64(b"x"), "x": 1}]}), 422, '{"b64"'),
    "b64 of text": (lambda: _json({"instances": [{"b64": b64(payloads.TEXT)}]}), 415, "not a JPEG"),
    "b64 of a truncated JPEG": (lambda: _json({"instances": [{"b64": b64(payloads.good_jpeg()[:300])}]}), 400, "JPEG"),
    "one bad instance among good ones": (
        lambda: _json({"instances": [pixels(), pixels(value=300), pixels()]}),
        422,
        "instance 1",
    ),
}


Headers = list[tuple[str, str]]
LENGTH = "Inference-Header-Content-Length"


def _v2(*tensors: dict[str, Any], **request: Any) -> bytes:
    return _json({"inputs": list(tensors), **request})


def _pixels_tensor(array: Any, datatype: str = "FP32", shape: list[int] | None = None) -> dict[str, Any]:
    values = np.asarray(array, dtype=float)
    return {
        "name": "images",
        "datatype": datatype,
        "shape": list(values.shape) if shape is None else shape,
        "data": values.ravel().tolist(),
    }


def _one_pixels(**kwargs: Any) -> dict[str, Any]:
    return _pixels_tensor([pixels(**kwargs)])


def _files_tensor(*items: Any, shape: list[int] | None = None) -> dict[str, Any]:
    return {"name": "image_files", "datatype": "BYTES", "shape": shape or [len(items)], "data": list(items)}


def _binary(tensor: dict[str, Any], tail: bytes, length: str | None = None, **request: Any) -> tuple[bytes, Headers]:
    head = _v2(tensor, **request)
    return head + tail, [(LENGTH, length if length is not None else str(len(head)))]


def _uint8_binary(size: int, declared: int | None = None) -> dict[str, Any]:
    parameters = {"binary_data_size": size if declared is None else declared}
    return {"name": "images", "datatype": "UINT8", "shape": [1, 16, 16, 3], "parameters": parameters}


def _v2_first_pixel(literal: bytes) -> bytes:
    return _v2(_one_pixels()).replace(b"80.0", literal, 1)


_GOOD_PIXELS = np.full(768, 80, dtype=np.uint8).tobytes()

#: name -> (a factory of (body, headers), expected status, fragment of the reason), in the Open Inference
#: Protocol's format (JSON, or JSON then binary tensors), with its headers.
OIP_CASES: dict[str, tuple[Callable[[], tuple[bytes, Headers]], int, str]] = {
    **{name: ((lambda f=f: (f(), [])), status, fragment) for name, (f, status, fragment) in COMMON_JSON_CASES.items()},
    "top-level list": (lambda: (b"[1, 2, 3]", []), 422, "invalid inference request"),
    "null": (lambda: (b"null", []), 422, "invalid inference request"),
    "no inputs": (lambda: (b"{}", []), 422, "invalid inference request: inputs"),
    "inputs not a list": (lambda: (_json({"inputs": "abc"}), []), 422, "invalid inference request: inputs"),
    "empty inputs": (lambda: (_v2(), []), 422, "exactly one input"),
    "two inputs": (lambda: (_v2(_one_pixels(), _files_tensor(b64(b"x"))), []), 422, "exactly one input"),
    "unknown input": (lambda: (_v2({**_one_pixels(), "name": "pixels"}), []), 422, "exactly one input"),
    "unknown datatype": (lambda: (_v2({**_one_pixels(), "datatype": "INT64"}), []), 422, "unsupported datatype"),
    "a long datatype": (lambda: (_v2({**_one_pixels(), "datatype": "Q" * 5000}), []), 422, "unsupported datatype"),
    "image_files as FP32": (lambda: (_v2({**_one_pixels(), "name": "image_files"}), []), 422, "holds BYTES"),
    "id not a string": (lambda: (_v2(_one_pixels(), id=5), []), 422, "invalid inference request: id"),
    "shape of strings": (lambda: (_v2({**_one_pixels(), "shape": ["a"]}), []), 422, "inputs.0.shape"),
    "3-D shape": (lambda: (_v2(_pixels_tensor(pixels())), []), 422, "expected [N, height, width, 3]"),
    "4 channels": (lambda: (_v2(_pixels_tensor(np.zeros((1, 16, 16, 4)))), []), 422, "expected [N"),
    "zero in the shape": (lambda: (_v2(_pixels_tensor([], shape=[1, 0, 16, 3])), []), 422, "expected [N"),
    "negative shape": (lambda: (_v2(_pixels_tensor([0] * 768, shape=[1, -16, -16, 3])), []), 422, "expected [N"),
    "data not a list": (lambda: (_v2({**_one_pixels(), "data": 5}), []), 422, "data must be a list"),
    "neither data nor binary": (lambda: (_v2({**_one_pixels(), "data": None}), []), 422, "neither data"),
    "data shorter than the shape": (lambda: (_v2({**_one_pixels(), "data": [0, 1]}), []), 422, "needs 768"),
    "ragged data": (lambda: (_v2({**_one_pixels(), "data": [[0] * 3, [0]]}), []), 422, "numeric array"),
    "strings as pixels": (lambda: (_v2({**_one_pixels(), "data": ["a"] * 768}), []), 422, "numeric array"),
    "1x1 pixel array": (lambda: (_v2(_pixels_tensor([pixels(1, 1)])), []), 422, "at least 8 pixels"),
    "NaN pixels": (lambda: (_v2(_one_pixels(value=float("nan"))), []), 422, "outside [0, 255]"),
    "Infinity pixels": (lambda: (_v2(_one_pixels(value=float("inf"))), []), 422, "outside [0, 255]"),
    "1e400 pixels": (lambda: (_v2_first_pixel(b"1e400"), []), 422, "outside [0, 255]"),
    "400-digit integer pixel": (lambda: (_v2_first_pixel(b"1" + b"0" * 400), []), 422, "outside [0, 255]"),
    "negative pixels": (lambda: (_v2(_one_pixels(value=-1)), []), 422, "outside [0, 255]"),
    "pixels over 255": (lambda: (_v2(_one_pixels(value=256)), []), 422, "outside [0, 255]"),
    "over the pixel limit": (lambda: (_v2(_pixels_tensor([0], shape=[1, 600, 500, 3])), []), 413, "pixels"),
    "too many images": (lambda: (_v2(_pixels_tensor([0], shape=[9, 16, 16, 3])), []), 413, "the limit is 8"),
    "BYTES that are not base64": (lambda: (_v2(_files_tensor("@@@ not base64 @@@")), []), 422, "base64"),
    "BYTES not a string": (lambda: (_v2(_files_tensor(12)), []), 422, "base64 string"),
    "BYTES of text": (lambda: (_v2(_files_tensor(b64(payloads.TEXT))), []), 415, "not a JPEG"),
    "BYTES fewer than the shape": (lambda: (_v2(_files_tensor(b64(b"x"), shape=[2])), []), 422, "shape says 2"),
    "BYTES of a 2-D shape": (lambda: (_v2(_files_tensor(b64(b"x"), shape=[1, 2])), []), 422, "expected [N]"),
    "unknown output": (lambda: (_v2(_one_pixels(), outputs=[{"name": "logits"}]), []), 422, "unknown output"),
    "classification of the warning": (
        lambda: (_v2(_one_pixels(), outputs=[{"name": "warning", "parameters": {"classification": 2}}]), []),
        422,
        "classification applies to",
    ),
    "classification of 9 classes": (
        lambda: (_v2(_one_pixels(), outputs=[{"name": "probabilities", "parameters": {"classification": 9}}]), []),
        422,
        "the model has 4",
    ),
    "binary of the wrong size": (lambda: _binary(_uint8_binary(10), b"\0" * 10), 422, "does not match"),
    "binary_data_size beyond the tail": (lambda: _binary(_uint8_binary(768), b"\0" * 10), 400, "binary_data_size"),
    "a tail without binary_data_size": (lambda: _binary(_one_pixels(), b"\0" * 10), 400, "no input has"),
    "truncated BYTES binary": (
        lambda: _binary({**_files_tensor(), "shape": [1], "parameters": {"binary_data_size": 9}}, b"\xe8\x03\0\0short"),
        400,
        "truncated BYTES",
    ),
    **{
        f"{LENGTH} {name}": ((lambda v=value: _binary(_uint8_binary(768), _GOOD_PIXELS, v)), 400, LENGTH)
        for name, value in {
            "superscript two": "²",
            "negative": "-5",
            "of 5000 digits": "9" * 5000,
            "not a number": "twelve",
            "zero": "0",
            "beyond the body": "99999999",
        }.items()
    },
    f"{LENGTH} twice": (
        lambda: (lambda body, headers: (body, headers * 2))(*_binary(_uint8_binary(768), _GOOD_PIXELS)),
        400,
        "send it once",
    ),
    "a gzip body": (lambda: (_v2(_one_pixels()), [("Content-Encoding", "gzip")]), 415, "Content-Encoding"),
}

#: Each JSON format's corpus: every inference route that reads the format gets all of it.
JSON_CORPUS: dict[Body, dict[str, tuple[Callable[[], tuple[bytes, Headers]], int, str]]] = {
    Body.TFSERVING_JSON: {name: ((lambda f=f: (f(), [])), st, fr) for name, (f, st, fr) in JSON_CASES.items()},
    Body.OIP: OIP_CASES,
}
JSON_PARAMS = [(path, name) for path, body in routes.JSON_ROUTES for name in JSON_CORPUS[body]]


def send_json(client: TestClient, path: str, name: str) -> httpx.Response:
    body = dict(routes.JSON_ROUTES)[path]
    factory, _, _ = JSON_CORPUS[body][name]
    content, headers = factory()
    header_bytes = [(key.encode(), value.encode("latin-1")) for key, value in [("Content-Type", "application/json")]]
    header_bytes += [(key.encode(), value.encode("latin-1")) for key, value in headers]
    return client.post(path, content=content, headers=header_bytes)


def test_every_json_format_has_a_corpus() -> None:
    assert set(JSON_CORPUS) == set(routes.JSON_BODIES)


@pytest.mark.parametrize(("path", "name"), JSON_PARAMS)
def test_bad_json(corpus_client: TestClient, path: str, name: str) -> None:
    _, status, fragment = JSON_CORPUS[dict(routes.JSON_ROUTES)[path]][name]
    assert_error(send_json(corpus_client, path, name), status, fragment)
    assert_serves(corpus_client, path)


# ------------------------------------------------------------------------------- bad requests, per route


def _multipart(body: bytes, boundary: str = "XyZ") -> dict[str, Any]:
    return {"content": body, "headers": {"Content-Type": f"multipart/form-data; boundary={boundary}"}}


def _part(name: str, data: bytes, filename: str = "scan.jpg") -> bytes:
    head = f'--XyZ\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
    return head.encode() + b"Content-Type: image/jpeg\r\n\r\n" + data + b"\r\n"


def _over_limit() -> bytes:
    return b"\xff\xd8\xff" + b"\x00" * (10 * 1024 * 1024)


JPEG_BODY = {"content": payloads.good_jpeg(), "headers": {"Content-Type": "image/jpeg"}}


def _accept(accept: str) -> dict[str, Any]:
    return {"content": payloads.good_jpeg(), "headers": {"Content-Type": "image/jpeg", "Accept": accept}}


#: name -> (method, path, request keyword arguments (or a factory of them), status, fragment of the reason)
REQUEST_CASES: dict[str, tuple[str, str, Any, int, str]] = {
    "predict: empty body without a type": ("POST", "/predict", {"content": b""}, 415, "unsupported content type"),
    "predict: empty multipart body": ("POST", "/predict", _multipart(b""), 400, "malformed multipart"),
    "predict: multipart without a boundary": (
        "POST",
        "/predict",
        {"content": b"x", "headers": {"Content-Type": "multipart/form-data"}},
        400,
        "boundary",
    ),
    "predict: truncated multipart": (
        "POST",
        "/predict",
        lambda: _multipart(_part("file", payloads.good_jpeg())[:-40]),
        400,
        "malformed multipart",
    ),
    "predict: multipart garbage": ("POST", "/predict", _multipart(b"\x00garbage\r\n" * 20), 400, "malformed multipart"),
    "predict: form-urlencoded": ("POST", "/predict", {"data": {"file": "brain"}}, 415, "urlencoded"),
    "predict: no file field": (
        "POST",
        "/predict",
        {"files": {"comment": (None, "brain")}},
        422,
        "no image",
    ),
    "predict: wrong field name": (
        "POST",
        "/predict",
        lambda: {"files": {"image": ("scan.jpg", payloads.good_jpeg(), "image/jpeg")}},
        422,
        "no image",
    ),
    "predict: empty file field (no file chosen)": (
        "POST",
        "/predict",
        {"files": {"file": ("", b"", "application/octet-stream")}},
        400,
        "empty image",
    ),
    "predict: too many files": (
        "POST",
        "/predict",
        lambda: {"files": [("files", (f"{i}.jpg", payloads.good_jpeg(), "image/jpeg")) for i in range(9)]},
        413,
        "the limit is 8",
    ),
    "predict: text/plain body": (
        "POST",
        "/predict",
        {"content": b"hi", "headers": {"Content-Type": "text/plain"}},
        415,
        "text/plain",
    ),
    "predict: body over the size limit": (
        "POST",
        "/predict",
        lambda: {"content": _over_limit(), "headers": {"Content-Type": "image/jpeg"}},
        413,
        "over the limit",
    ),
    "predict: Accept text/csv": ("POST", "/predict", _accept("text/csv"), 406, "application/json"),
    "predict: Accept image/*": ("POST", "/predict", _accept("image/*"), 406, "application/json"),
    "predict: Accept application/json;q=0": (
        "POST",
        "/predict",
        _accept("application/json;q=0, text/html"),
        406,
        "application/json",
    ),
    "predict: GET": ("GET", "/predict", {}, 405, "Method Not Allowed"),
    "invocations: text/csv": (
        "POST",
        "/invocations",
        {"content": b"1,2,3\n", "headers": {"Content-Type": "text/csv"}},
        415,
        "text/csv",
    ),
    "invocations: multipart": (
        "POST",
        "/invocations",
        lambda: {"files": {"file": ("scan.jpg", payloads.good_jpeg(), "image/jpeg")}},
        415,
        "multipart/form-data",
    ),
    "invocations: form-urlencoded": ("POST", "/invocations", {"data": {"a": "b"}}, 415, "urlencoded"),
    "invocations: empty image body": (
        "POST",
        "/invocations",
        {"content": b"", "headers": {"Content-Type": "image/jpeg"}},
        400,
        "empty image",
    ),
    "invocations: JPEG declared as JSON": (
        "POST",
        "/invocations",
        lambda: {"content": payloads.good_jpeg(), "headers": {"Content-Type": "application/json"}},
        400,
        "malformed JSON",
    ),
    "invocations: Accept text/csv": (
        "POST",
        "/invocations",
        _accept("text/csv"),
        406,
        "application/json",
    ),
    "invocations: body over the size limit": (
        "POST",
        "/invocations",
        lambda: {"content": _over_limit(), "headers": {"Content-Type": "image/jpeg"}},
        413,
        "over the limit",
    ),
    "tfserving: unknown model": ("POST", "/v1/models/other:predict", {"json": {"instances": [pixels()]}}, 404, "other"),
    "tfserving: unknown version": (
        "POST",
        f"/v1/models/{MODEL_NAME}/versions/99:predict",
        {"json": {"instances": [pixels()]}},
        404,
        "99",
    ),
    "tfserving: non-numeric version": (
        "POST",
        f"/v1/models/{MODEL_NAME}/versions/latest:predict",
        {"json": {"instances": [pixels()]}},
        404,
        "latest",
    ),
    "tfserving: GET on predict": ("GET", TF_PREDICT, {}, 404, "Servable not found"),  # a status request
    "tfserving: JPEG bytes as the body": ("POST", TF_PREDICT, JPEG_BODY, 400, "malformed JSON"),
    "tfserving: Accept text/csv": (
        "POST",
        TF_PREDICT,
        {"json": {"instances": [pixels()]}, "headers": {"Accept": "text/csv"}},
        406,
        "application/json",
    ),
    "tfserving: body over the size limit": (
        "POST",
        TF_PREDICT,
        lambda: {"content": b'{"instances": "' + b"a" * (10 * 1024 * 1024) + b'"}'},
        413,
        "over the limit",
    ),
    "explain: GET": ("GET", "/explain", {}, 405, "Method Not Allowed"),
    "explain: text/plain body": (
        "POST",
        "/explain",
        {"content": b"hi", "headers": {"Content-Type": "text/plain"}},
        415,
        "text/plain",
    ),
    "explain: two files": (
        "POST",
        "/explain",
        lambda: {"files": [("file", (f"{i}.jpg", payloads.good_jpeg(), "image/jpeg")) for i in range(2)]},
        413,
        "one image per request",
    ),
    "explain: no file field": ("POST", "/explain", {"files": {"class_name": (None, "glioma")}}, 422, "no image"),
    "explain: unknown class_name": (
        "POST",
        "/explain?class_name=brain",
        lambda: {"content": payloads.good_jpeg(), "headers": {"Content-Type": "image/jpeg"}},
        422,
        "unknown class_name",
    ),
    "explain: Accept text/csv": ("POST", "/explain", _accept("text/csv"), 406, "application/json"),
    "explain: body over the size limit": (
        "POST",
        "/explain",
        lambda: {"content": _over_limit(), "headers": {"Content-Type": "image/jpeg"}},
        413,
        "over the limit",
    ),
    "v2: unknown model": ("POST", "/v2/models/other/infer", {"json": {"inputs": []}}, 404, "other"),
    "v2: unknown version": ("POST", f"/v2/models/{MODEL_NAME}/versions/9/infer", {"json": {}}, 404, "no version"),
    "v2: GET on infer": ("GET", V2_INFER, {}, 405, "Method Not Allowed"),
    "v2: metadata of another model": ("GET", "/v2/models/other", {}, 404, "other"),
    "v2: body over the size limit": (
        "POST",
        V2_INFER,
        lambda: {"content": b'{"inputs": "' + b"a" * (10 * 1024 * 1024) + b'"}'},
        413,
        "over the limit",
    ),
}


@pytest.mark.parametrize("name", list(REQUEST_CASES))
def test_bad_request(corpus_client: TestClient, name: str) -> None:
    method, path, kwargs, status, fragment = REQUEST_CASES[name]
    kwargs = kwargs() if callable(kwargs) else kwargs
    assert_error(corpus_client.request(method, path, **kwargs), status, fragment)
    assert_serves(corpus_client, path.split("?")[0] if path.split("?")[0] in FILE_ROUTES else "/predict")
    assert_serves(corpus_client, TF_PREDICT)


def test_two_file_fields_are_two_images(corpus_client: TestClient) -> None:
    """Repeated ``file``/``files`` fields are several images, answered in upload order."""
    jpeg, png = payloads.good_jpeg(), payloads.good_png()
    files = [("file", ("a.jpg", jpeg, "image/jpeg")), ("file", ("b.png", png, "image/png"))]
    response = corpus_client.post("/predict", files=files)
    assert response.status_code == 200, response.text
    one_by_one = [probabilities(send_file(corpus_client, "/predict", d))[0] for d in (jpeg, png)]
    assert np.allclose(probabilities(response), one_by_one, atol=1e-5)


def request_counts(client: TestClient) -> tuple[float, float]:
    """(all answers, 5xx answers) counted so far by ``mri_requests_total`` (a process-wide counter)."""
    total = errors = 0.0
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("mri_requests_total{") and 'route="/metrics"' not in line:
            total += float(line.split()[-1])
            errors += float(line.split()[-1]) if 'status="5' in line else 0.0
    return total, errors


def test_the_whole_corpus_gets_no_server_error(corpus_client: TestClient) -> None:
    """Every kind of bad input sent once: the metrics count each answer, and none of them is a 5xx (measured
    as a before/after difference, so other tests sharing the registry cannot hide or cause a failure)."""
    assert len(payloads.BAD_FILES) + len(JSON_CASES) + len(REQUEST_CASES) >= 40
    before_total, before_errors = request_counts(corpus_client)
    sent = 0
    for path in INFERENCE_PATHS:
        for factory, _, _ in payloads.BAD_FILES.values():
            assert 400 <= send_file(corpus_client, path, factory()).status_code < 500
            sent += 1
    for path, name in JSON_PARAMS:
        assert 400 <= send_json(corpus_client, path, name).status_code < 500
        sent += 1
    for method, path, kwargs, _, _ in REQUEST_CASES.values():
        response = corpus_client.request(method, path, **(kwargs() if callable(kwargs) else kwargs))
        assert 400 <= response.status_code < 500
        sent += 1
    after_total, after_errors = request_counts(corpus_client)
    assert after_errors == before_errors
    assert after_total - before_total >= sent, "the metrics missed answers"


# --------------------------------------------------------------- a real server: chunks, lies, slow bodies


class RawExchange:
    """One raw HTTP/1.1 request on a socket: the head, then a body sent by a thread while the answer is read."""

    def __init__(self, port: int, head: bytes, body: Iterable[bytes] = ()) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.sock.sendall(head)
        self.sent = 0
        self.send_error: str | None = None
        self._body = body
        self._sender = threading.Thread(target=self._send, daemon=True)
        self._sender.start()

    def _send(self) -> None:
        try:
            for chunk in self._body:
                self.sock.sendall(chunk)
                self.sent += len(chunk)
        except OSError as exc:
            self.send_error = type(exc).__name__

    def answer(self) -> tuple[bytes, bool]:
        """Everything the server sent, and whether it closed the connection (EOF or reset)."""
        received = b""
        try:
            while chunk := self.sock.recv(65536):
                received += chunk
            closed = True
        except ConnectionResetError:
            closed = True
        except TimeoutError:
            closed = False
        self.sock.close()
        self._sender.join(5)
        return received, closed


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer[9:12])


def head(path: str, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *headers, "", ""]
    return "\r\n".join(lines).encode()


def endless(chunk: bytes, total: int, chunked: bool = False) -> Iterator[bytes]:
    """``total`` bytes in ``chunk``-sized pieces (HTTP chunk framing when ``chunked``)."""
    for _ in range(total // len(chunk)):
        yield b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk
    if chunked:
        yield b"0\r\n\r\n"


def live_serves(server: ServerProcess) -> None:
    response = httpx.post(
        f"{server.url}/invocations", content=payloads.good_jpeg(), headers={"Content-Type": "image/jpeg"}, timeout=30
    )
    assert response.status_code == 200, response.text


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("path", INFERENCE_PATHS)
def test_chunked_upload_over_the_limit_is_cut_off(live_server: ServerProcess, path: str) -> None:
    """An endless chunked upload gets 413 and a closed connection, without the server reading it all."""
    before = rss_bytes(live_server.pid)
    total = 512 << 20
    exchange = RawExchange(
        live_server.port,
        head(path, "Content-Type: image/jpeg", "Transfer-Encoding: chunked"),
        endless(b"\x00" * 65536, total, chunked=True),
    )
    answer, closed = exchange.answer()
    assert status_of(answer) == 413 and b"over the limit" in answer
    assert closed
    assert exchange.sent < 64 << 20, f"the server read {exchange.sent >> 20} MB of an over-limit body"
    assert rss_bytes(live_server.pid) - before < 32 << 20
    live_serves(live_server)


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("path", INFERENCE_PATHS)
def test_content_length_over_the_limit_is_refused_before_the_body(live_server: ServerProcess, path: str) -> None:
    """A declared length over the limit gets 413 at once (the lie: only a few bytes follow, then nothing)."""
    exchange = RawExchange(live_server.port, head(path, "Content-Type: image/jpeg", "Content-Length: 999999999999"))
    started = time.monotonic()
    answer, closed = exchange.answer()
    assert status_of(answer) == 413 and closed
    assert time.monotonic() - started < 5
    live_serves(live_server)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_body_longer_than_its_content_length(live_server: ServerProcess) -> None:
    """A Content-Length that undercounts: the request is its declared bytes (a bad image: 400), and the rest,
    which is not HTTP, is refused (400) and the connection closed; the server reads no more."""
    exchange = RawExchange(
        live_server.port,
        head("/invocations", "Content-Type: image/jpeg", "Content-Length: 100"),
        endless(payloads.good_jpeg()[:100] + b"\x00" * 65436, 256 << 20),
    )
    answer, closed = exchange.answer()
    statuses = [int(part[:3]) for part in answer.split(b"HTTP/1.1 ")[1:]]
    assert statuses and all(400 <= s < 500 for s in statuses), answer[:500]
    assert closed and exchange.sent < 64 << 20
    live_serves(live_server)


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "headers",
    [
        ("Content-Length: 10", "Transfer-Encoding: chunked"),  # request smuggling
        ("Content-Length: ten",),
        ("Content-Length: 10", "Content-Length: 20"),
        ("Transfer-Encoding: gzip",),
    ],
    ids=["CL+TE", "non-numeric CL", "two CLs", "unknown TE"],
)
def test_malformed_framing_is_refused(live_server: ServerProcess, headers: tuple[str, ...]) -> None:
    exchange = RawExchange(
        live_server.port, head("/invocations", "Content-Type: image/jpeg", *headers), iter([b"0123456789"])
    )
    answer, closed = exchange.answer()
    assert 400 <= status_of(answer) < 500 and closed
    live_serves(live_server)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_slow_body_times_out_with_408(live_server: ServerProcess) -> None:
    """Slowloris: a body that stops coming gets 408 after the body timeout; the connection is closed."""

    def trickle() -> Iterator[bytes]:
        yield payloads.good_jpeg()[:200]
        time.sleep(LIVE_BODY_TIMEOUT_S + 3)

    started = time.monotonic()
    exchange = RawExchange(
        live_server.port, head("/invocations", "Content-Type: image/jpeg", "Content-Length: 5000"), trickle()
    )
    answer, closed = exchange.answer()
    elapsed = time.monotonic() - started
    assert status_of(answer) == 408 and b"not received within" in answer and closed
    assert LIVE_BODY_TIMEOUT_S - 0.5 < elapsed < LIVE_BODY_TIMEOUT_S + 5
    live_serves(live_server)


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("path", INFERENCE_PATHS)
def test_an_ordinary_client_reads_the_413(live_server: ServerProcess, path: str) -> None:
    """A client that sends its whole (moderately) over-limit body before reading gets the 413, not a reset."""
    body = b"\xff\xd8\xff" + b"\x00" * (LIVE_MAX_BODY_BYTES + LIVE_MAX_BODY_BYTES // 2)
    with httpx.Client(base_url=live_server.url, timeout=30) as client:
        response = client.post(path, content=body, headers={"Content-Type": "image/jpeg"})
        assert_error(response, 413, "over the limit")
        method, url, kwargs = routes.file_request(FILE_ROUTES[path], payloads.good_jpeg())
        response = client.request(method, url, **kwargs)
        assert response.status_code == 200, response.text


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("value", [b"\xb2", b"-5", b"9" * 5000, b"x"], ids=["superscript two", "negative", "huge", "x"])
def test_a_bad_inference_header_length_is_a_400_on_a_real_server(live_server: ServerProcess, value: bytes) -> None:
    """Regression: ``Inference-Header-Content-Length: \xb2`` (a Latin-1 byte ``str.isdigit`` accepts and ``int``
    refuses) got a 500 and a traceback in the log (the session's log check covers the traceback)."""
    body = b'{"inputs": []}'
    exchange = RawExchange(
        live_server.port,
        head(V2_INFER, f"Content-Length: {len(body)}", "Connection: close")[:-2]
        + b"Inference-Header-Content-Length: "
        + value
        + b"\r\n\r\n",
        iter([body]),
    )
    answer, _ = exchange.answer()
    assert status_of(answer) == 400, answer[:300]
    assert answer.endswith(b'{"error":"Inference-Header-Content-Length must be a byte count within the body"}')
    live_serves(live_server)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_chunked_upload_under_the_limit_is_served(live_server: ServerProcess) -> None:
    data = payloads.good_jpeg()
    pieces = [data[i : i + 100] for i in range(0, len(data), 100)]
    exchange = RawExchange(
        live_server.port,
        head("/invocations", "Content-Type: image/jpeg", "Transfer-Encoding: chunked", "Connection: close"),
        iter([b"%x\r\n%s\r\n" % (len(p), p) for p in pieces] + [b"0\r\n\r\n"]),
    )
    answer, _ = exchange.answer()
    assert status_of(answer) == 200 and b'"predictions"' in answer
