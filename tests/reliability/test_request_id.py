"""A real server's access log line names the request's X-Request-ID (the one the client sent, when sane)."""

from __future__ import annotations

import httpx
import pytest

from tests.reliability import payloads
from tests.reliability.server import ServerProcess


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_access_log_line_carries_the_request_id(live_server: ServerProcess) -> None:
    files = {"file": ("x.jpg", payloads.good_jpeg(), "image/jpeg")}
    with httpx.Client(base_url=live_server.url, timeout=60) as client:
        answer = client.post("/predict", files=files, headers={"X-Request-ID": "live-trace-42"})
        generated = client.get("/healthz").headers["X-Request-ID"]
    assert answer.status_code == 200 and answer.headers["X-Request-ID"] == "live-trace-42"
    lines = live_server.log().splitlines()
    assert [line for line in lines if "uvicorn.access" in line and "[live-trace-42]" in line and "/predict" in line]
    assert [line for line in lines if "uvicorn.access" in line and f"[{generated}]" in line and "/healthz" in line]
