"""Request IDs: the client's sane X-Request-ID is kept, anything else replaced; every answer carries it (a 4xx
from the guards and a 500 too) and so does every log line written for the request; the warnings metric."""

from __future__ import annotations

import logging
import re

import pytest

from service.http.middleware import REQUEST_ID_HEADER, RequestIdFilter, choose_request_id
from tests.service import images
from tests.service.conftest import make_settings
from tests.service.held import Hold, held_classifier

GENERATED = re.compile(r"[0-9a-f]{32}")


@pytest.mark.parametrize("sent", ["3f2a9c1e-7b4d-4e8a-9f00-123456789abc", "lb.trace:0001_a", "x"])
def test_a_sane_request_id_is_returned_unchanged(client, sent):
    response = client.post(
        "/predict", files={"file": ("x.jpg", images.jpeg(1), "image/jpeg")}, headers={REQUEST_ID_HEADER: sent}
    )
    assert response.status_code == 200
    assert response.headers[REQUEST_ID_HEADER] == sent


@pytest.mark.parametrize("sent", [None, "", "a" * 129, "id with spaces", "<script>", "id\u00e9"])
def test_a_missing_or_odd_request_id_is_replaced_by_a_new_one(client, sent):
    headers = {} if sent is None else {REQUEST_ID_HEADER: sent.encode("utf-8")}
    first = client.get("/healthz", headers=headers).headers[REQUEST_ID_HEADER]
    second = client.get("/healthz", headers=headers).headers[REQUEST_ID_HEADER]
    assert GENERATED.fullmatch(first) and GENERATED.fullmatch(second) and first != second


def test_refusals_and_errors_carry_the_request_id(open_client, model_root, tf_classifier, caplog):
    client = open_client(make_settings(model_root), tf_classifier)
    refused = client.post("/predict", content=b"not an image", headers={REQUEST_ID_HEADER: "bad-upload-1"})
    assert refused.status_code == 415 and refused.headers[REQUEST_ID_HEADER] == "bad-upload-1"

    failing = held_classifier(tf_classifier, Hold(failure="boom"))
    client = open_client(make_settings(model_root), failing, raise_server_exceptions=False)
    handler_filter = RequestIdFilter()
    caplog.handler.addFilter(handler_filter)
    try:
        response = client.post(
            "/predict",
            files={"file": ("x.jpg", images.jpeg(1), "image/jpeg")},
            headers={REQUEST_ID_HEADER: "trace-500"},
        )
    finally:
        caplog.handler.removeFilter(handler_filter)
    assert response.status_code == 500 and response.headers[REQUEST_ID_HEADER] == "trace-500"
    # the handler's line names the request (the batching thread's own line serves a whole batch: it has none)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name == "service.app"]
    assert errors and all(getattr(r, "request_id", None) == "trace-500" for r in errors)


def test_choose_request_id():
    assert choose_request_id("abc-123") == "abc-123"
    assert choose_request_id("a/b") != "a/b"
    assert GENERATED.fullmatch(choose_request_id(None))


def _warnings(client) -> dict[str, float]:
    found = re.findall(r'^mri_warnings_total\{reason="(\w+)"\} (\S+)$', client.get("/metrics").text, re.M)
    return {reason: float(value) for reason, value in found}


def test_warnings_are_counted_per_reason(client):
    """mri_warnings_total{reason}: every reason exported from the start; a colour photo counts under
    colour_image once per image, and each other reason exactly as often as the answers name it."""
    before = _warnings(client)
    assert set(before) >= {"colour_image", "bright_background", "low_confidence", "unlike_training"}
    tinted = images.mri_slice(5)
    tinted[..., 0] = 220  # a colour image: far from grayscale
    photo = images.encode(tinted, "PNG")
    answer = client.post("/predict", files=[("files", ("a.png", photo, "image/png"))] * 2).json()
    reasons = [p["check"]["reasons"] for p in answer["predictions"]]
    assert all("colour_image" in r for r in reasons)
    after = _warnings(client)
    for reason in before:
        assert after[reason] - before[reason] == sum(reason in r for r in reasons), reason
