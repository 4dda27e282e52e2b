"""service.http.uploads.read_body: the declared length is trusted only when it is a plain ASCII number."""

from __future__ import annotations

import asyncio

import pytest
from starlette.requests import Request

from service.errors import PayloadTooLargeError
from service.http.uploads import read_body


def _request(content_length: bytes, body: bytes) -> Request:
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [(b"content-length", content_length)]}
    return Request(scope, receive)


@pytest.mark.parametrize("declared", [b"\xb2", b"\xb9\xb3", b"-1", b"12x", b""])
def test_a_declared_length_that_is_no_ascii_number_is_ignored(declared: bytes) -> None:
    """'²' is a digit to str.isdigit but not to int(): such a header falls back to counting the body."""
    assert asyncio.run(read_body(_request(declared, b"abc"), limit=10)) == b"abc"
    with pytest.raises(PayloadTooLargeError):
        asyncio.run(read_body(_request(declared, b"x" * 11), limit=10))


def test_a_declared_length_over_the_limit_is_refused_before_the_body() -> None:
    with pytest.raises(PayloadTooLargeError):
        asyncio.run(read_body(_request(b"11", b""), limit=10))
