"""The concurrency limit (503 + Retry-After, probes never refused), the request deadline (504) and the bound
on concurrent image decodes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.classifier import Classifier
from service.limits import ConcurrencyLimitMiddleware
from tests.reliability import payloads
from tests.service.conftest import make_settings


class HeldClassifier(Classifier):
    """The loaded tiny model, whose ``predict`` can be held, or slowed down once."""

    def __init__(self, inner: Classifier) -> None:
        super().__init__(inner.settings)
        self.use(inner.model)
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.delay_once = 0.0

    def infer(self, images: np.ndarray) -> np.ndarray:
        self.entered.set()
        assert self.release.wait(60)
        delay, self.delay_once = self.delay_once, 0.0
        time.sleep(delay)
        return super().infer(images)


@pytest.fixture
def held(tf_classifier: Classifier) -> HeldClassifier:
    return HeldClassifier(tf_classifier)


@pytest.fixture
def start(model_root: Path, held: HeldClassifier) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def _start(**overrides: Any) -> TestClient:
        client = TestClient(create_app(make_settings(model_root, **overrides), held))
        clients.append(client.__enter__())
        return client

    yield _start
    for client in clients:
        client.__exit__(None, None, None)


def upload(client: TestClient) -> Any:
    return client.post("/invocations", content=payloads.good_jpeg(), headers={"Content-Type": "image/jpeg"})


def find_middleware(app: Any, kind: type[ConcurrencyLimitMiddleware]) -> ConcurrencyLimitMiddleware:
    """The instance of ``kind`` in the app's built middleware stack."""
    layer = app.middleware_stack
    while layer is not None and not isinstance(layer, kind):
        layer = getattr(layer, "app", None)
    assert layer is not None
    return layer


def limited_total(client: TestClient) -> float:
    line = next(line for line in client.get("/metrics").text.splitlines() if line.startswith("mri_limited_total "))
    return float(line.split()[-1])


def test_over_the_concurrency_limit_answers_503_with_retry_after(
    start: Callable[..., TestClient], held: HeldClassifier
) -> None:
    client = start(max_concurrent_requests=2, retry_after_s=7)
    before = limited_total(client)
    held.release.clear()
    with ThreadPoolExecutor(max_workers=2) as pool:
        first, second = pool.submit(upload, client), pool.submit(upload, client)
        assert held.entered.wait(30)  # requests 1 and 2 are in the batcher or in inference, held
        limiter = find_middleware(client.app, ConcurrencyLimitMiddleware)
        deadline = time.monotonic() + 30
        while limiter.active < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert limiter.active == 2
        started = time.monotonic()
        response = upload(client)
        assert time.monotonic() - started < 5
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "7"
        assert response.json() == {"error": "server busy: too many requests in flight; retry later"}
        for probe in ("/healthz", "/readyz", "/ping", "/metrics"):  # probes and scrapes are never refused
            assert client.get(probe).status_code == 200, probe
        held.release.set()
        assert first.result(30).status_code == 200 and second.result(30).status_code == 200
    assert upload(client).status_code == 200
    assert limited_total(client) == before + 1


def test_a_request_over_its_deadline_gets_504_and_the_service_goes_on(
    start: Callable[..., TestClient], held: HeldClassifier
) -> None:
    client = start(request_timeout_s=0.5)
    held.delay_once = 2.0
    started = time.monotonic()
    response = upload(client)
    assert response.status_code == 504
    assert response.json() == {"error": "request not answered within 0.5 s"}
    assert time.monotonic() - started < 1.9
    time.sleep(2.0)  # the abandoned batch finishes in the worker
    assert upload(client).status_code == 200
    assert client.app.state.batcher.depth == 0  # type: ignore[attr-defined]


def test_decodes_are_bounded(start: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch) -> None:
    from service import codec

    client = start(max_concurrent_decodes=1, max_concurrent_requests=16)
    running, peak = 0, 0
    lock = threading.Lock()
    real = codec.decode_files

    def counting_decode(*args: Any, **kwargs: Any) -> np.ndarray:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return real(*args, **kwargs)

    monkeypatch.setattr(codec, "decode_files", counting_decode)
    with ThreadPoolExecutor(max_workers=6) as pool:
        futures = [
            pool.submit(client.post, "/predict", files={"file": ("x.jpg", payloads.good_jpeg(), "image/jpeg")})
            for _ in range(6)
        ]
        assert [f.result(60).status_code for f in futures] == [200] * 6
    assert peak == 1


def test_probes_answer_while_every_worker_thread_is_busy_decoding(
    start: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: with decodes holding all 40 worker threads, /ping and /readyz waited behind them (their
    dependencies ran in that thread pool): a SageMaker ping times out after 2 s and the instance is replaced."""
    from service import codec

    release = threading.Event()
    started = threading.Semaphore(0)
    real = codec.decode_files

    def held_decode(*args: Any, **kwargs: Any) -> np.ndarray:
        started.release()
        assert release.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(codec, "decode_files", held_decode)
    client = start(max_concurrent_decodes=64, max_queue_size=64, max_concurrent_requests=64)
    with ThreadPoolExecutor(max_workers=45) as pool:
        futures = [
            pool.submit(client.post, "/predict", files={"file": ("x.jpg", payloads.good_jpeg(), "image/jpeg")})
            for _ in range(45)
        ]
        for _ in range(40):  # the default thread pool (40 threads) is full of held decodes
            assert started.acquire(timeout=30)
        try:
            for probe in ("/ping", "/readyz", "/healthz", "/metrics"):
                began = time.monotonic()
                assert client.get(probe).status_code == 200, probe
                assert time.monotonic() - began < 2.0, probe
        finally:
            release.set()
        assert [f.result(60).status_code for f in futures] == [200] * 45
