"""The concurrency limit (503 + Retry-After, probes never refused), the request deadline (504) and the bound
on concurrent image decodes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.http.limits import ConcurrencyLimitMiddleware
from service.http.routes.rules import Body
from service.inference.classifier import Classifier
from tests.reliability import payloads, routes
from tests.service.conftest import make_settings
from tests.service.held import Hold, held_classifier


@pytest.fixture
def held() -> Hold:
    """The loaded tiny model's batches: held on request, or slowed down once."""
    return Hold()


@pytest.fixture
def start(model_root: Path, tf_classifier: Classifier, held: Hold) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def _start(**overrides: Any) -> TestClient:
        client = TestClient(create_app(make_settings(model_root, **overrides), held_classifier(tf_classifier, held)))
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


def test_over_the_concurrency_limit_answers_503_with_retry_after(start: Callable[..., TestClient], held: Hold) -> None:
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
        for probe in (*routes.PROBES, "/metrics"):  # probes and scrapes are never refused
            assert client.get(probe).status_code == 200, probe
        held.release.set()
        assert first.result(30).status_code == 200 and second.result(30).status_code == 200
    assert upload(client).status_code == 200
    assert limited_total(client) == before + 1


def test_a_request_over_its_deadline_gets_504_and_the_service_goes_on(
    start: Callable[..., TestClient], held: Hold
) -> None:
    """The 504 comes while the model still holds the request's batch (it is released only after the answer), so
    the deadline never waits for inference; the abandoned batch then finishes and the next request is served."""
    client = start(request_timeout_s=0.5)
    held.release.clear()
    with ThreadPoolExecutor(max_workers=1) as pool:
        try:
            started = time.monotonic()
            pending = pool.submit(upload, client)
            assert held.entered.wait(30)  # the batch is in the model, held
            response = pending.result(timeout=30)  # a deadline that waited for the model would hang here
            assert time.monotonic() - started >= 0.5, "answered before its deadline"
            assert response.status_code == 504
            assert response.json() == {"error": "request not answered within 0.5 s"}
            assert not held.release.is_set() and held.batches == []  # still held: the answer did not wait for it
        finally:
            held.release.set()
    deadline = time.monotonic() + 30
    while held.batches != [1] and time.monotonic() < deadline:  # the abandoned batch finishes in the worker
        time.sleep(0.01)
    assert held.batches == [1]
    assert upload(client).status_code == 200
    assert client.app.state.batcher.depth == 0  # type: ignore[attr-defined]


class Concurrency:
    """How many calls of a wrapped function ran at once, at the most."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.lock = threading.Lock()


def count_concurrent(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> Concurrency:
    """Wrap ``module.name`` so that each call lasts at least 50 ms and the most calls at once are counted."""
    calls, real = Concurrency(), getattr(module, name)

    def counting(*args: Any, **kwargs: Any) -> Any:
        with calls.lock:
            calls.running += 1
            calls.peak = max(calls.peak, calls.running)
        time.sleep(0.05)
        with calls.lock:
            calls.running -= 1
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counting)
    return calls


def test_decodes_are_bounded(start: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch) -> None:
    from service.protocols import codec

    client = start(max_concurrent_decodes=1, max_concurrent_requests=16)
    calls = count_concurrent(monkeypatch, codec, "decode_files")
    with ThreadPoolExecutor(max_workers=6) as pool:
        futures = [
            pool.submit(client.post, "/predict", files={"file": ("x.jpg", payloads.good_jpeg(), "image/jpeg")})
            for _ in range(6)
        ]
        assert [f.result(60).status_code for f in futures] == [200] * 6
    assert calls.peak == 1


def test_probes_answer_while_every_worker_thread_is_busy_decoding(
    start: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: with decodes holding all 40 worker threads, /ping and /readyz waited behind them (their
    dependencies ran in that thread pool): a SageMaker ping times out after 2 s and the instance is replaced."""
    from service.protocols import codec

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
            for probe in (*routes.PROBES, "/metrics"):
                began = time.monotonic()
                assert client.get(probe).status_code == 200, probe
                assert time.monotonic() - began < 2.0, probe
        finally:
            release.set()
        assert [f.result(60).status_code for f in futures] == [200] * 45


# ------------------------------------------------------------------ JSON bodies: bounded before, yielding during

JSON_PATHS = [path for path, _ in routes.JSON_ROUTES]
#: A JSON body that holds the event loop stalls a probe for most of the time the body takes to handle (and
#: Kubernetes and SageMaker give up on a probe after 2 s). A probe is stalled when it waits longer than
#: PROBE_BOUND_S and longer than STALL_SHARE of the request's own time: relative to the request, so that busy
#: cores, which slow a parse's steps and the whole request alike, do not turn a slow answer into a stall.
PROBE_BOUND_S = 0.75
STALL_SHARE = 0.25


@dataclass(frozen=True)
class Probes:
    """The /healthz latencies measured while one request was handled, and how long that request took."""

    latencies: list[float]
    elapsed: float

    def stalled(self) -> bool:
        return max(self.latencies) > max(PROBE_BOUND_S, STALL_SHARE * self.elapsed)

    def __str__(self) -> str:
        return f"slowest probes {sorted(self.latencies)[-5:]} during a request of {self.elapsed:.2f} s"


def probe_latencies_during(client: TestClient, request: Callable[[], Any]) -> tuple[Any, Probes]:
    """``request()`` in a thread, with /healthz called back to back until it is answered."""
    latencies: list[float] = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        started = time.monotonic()
        future = pool.submit(request)
        while not future.done():
            began = time.monotonic()
            assert client.get("/healthz").status_code == 200
            latencies.append(time.monotonic() - began)
        return future.result(), Probes(latencies, time.monotonic() - started)


@pytest.mark.parametrize("path", JSON_PATHS)
def test_a_json_body_of_empty_arrays_is_refused_before_it_is_built(start: Callable[..., TestClient], path: str) -> None:
    """Regression: 10 MB of ``[[],[],...]`` were parsed into 3.5 million lists (250 MB) while the parser held
    the GIL for seconds: every route, probes included, stalled. Now a byte count refuses it before parsing."""
    import tracemalloc

    client = start()
    limit = client.app.state.settings.max_body_bytes  # type: ignore[attr-defined]
    body = b'{"instances": [' + b"[]," * ((limit - 20) // 3) + b"[]]}"
    assert len(body) <= limit
    tracemalloc.start()
    try:
        response, probes = probe_latencies_during(
            client, lambda: client.post(path, content=body, headers={"Content-Type": "application/json"})
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not probes.stalled(), f"{probes}"
    assert peak < 6 * len(body), peak  # the body and its copies on the way in; no object per array
    assert response.status_code == 413
    assert response.json() == {"error": "JSON body has more arrays or objects than a batch of images can hold"}
    assert upload(client).status_code == 200


@pytest.mark.parametrize(("path", "body"), routes.JSON_ROUTES, ids=[p for p, _ in routes.JSON_ROUTES])
def test_probes_answer_while_a_large_json_pixel_batch_is_parsed(
    start: Callable[..., TestClient], path: str, body: Body
) -> None:
    """Regression: a valid 9 MB pixel array held the GIL in ``json.loads`` and then in ``np.asarray`` for
    seconds each (a worker thread does not help when C code never lets go of the GIL); the Open Inference
    Protocol route converted its JSON ``data`` with one ``np.asarray`` and stalled every route for 0.6-1 s."""
    client = start(max_images_per_request=16)
    batch = np.full((16, 256, 256, 3), 7, dtype=np.uint8)
    content = routes.json_pixels(body, batch)
    assert len(content) <= client.app.state.settings.max_body_bytes  # type: ignore[attr-defined]
    response, probes = probe_latencies_during(
        client, lambda: client.post(path, content=content, headers={"Content-Type": "application/json"})
    )
    assert response.status_code == 200, response.text
    assert len(routes.probabilities(response.json())) == 16
    assert not probes.stalled(), f"{probes}"


@pytest.mark.parametrize(("path", "body"), routes.JSON_ROUTES, ids=[p for p, _ in routes.JSON_ROUTES])
def test_json_bodies_are_parsed_under_a_decode_slot(
    start: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch, path: str, body: Body
) -> None:
    """Parsing a JSON pixel batch costs what decoding an image does: at most ``max_concurrent_decodes`` at once."""
    from service.protocols import codec

    client = start(max_concurrent_decodes=1, max_concurrent_requests=16)
    calls = count_concurrent(monkeypatch, codec, "parse_json")
    content = routes.json_pixels(body, np.full((1, 16, 16, 3), 80, dtype=np.uint8))
    with ThreadPoolExecutor(max_workers=6) as pool:
        futures = [
            pool.submit(client.post, path, content=content, headers={"Content-Type": "application/json"})
            for _ in range(6)
        ]
        assert [f.result(60).status_code for f in futures] == [200] * 6
    assert calls.peak == 1


def _longest_gil_hold(work: Callable[[], Any]) -> float:
    """The longest time a ticking thread went without running while ``work()`` ran in this thread."""
    done = threading.Event()
    gaps: list[float] = []

    def tick() -> None:
        last = time.perf_counter()
        while not done.is_set():
            now = time.perf_counter()
            gaps.append(now - last)
            last = now
            time.sleep(0.001)

    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        work()
    finally:
        done.set()
        ticker.join()
    return max(gaps)


#: How long a JSON parser may hold the GIL in one go. Measured on the 2-core dev machine for the batch below
#: (2026-05): about 0.04 s with the stepwise parse and conversion; about 1 s when the Open Inference Protocol
#: route converted its ``data`` in one ``np.asarray`` call with the garbage collector on.
GIL_HOLD_BOUND_S = 0.3


@pytest.mark.parametrize("body", routes.JSON_BODIES, ids=[b.name for b in routes.JSON_BODIES])
def test_json_parsers_hand_the_gil_back_between_short_steps(body: Body) -> None:
    """Each JSON format's parser (the parse, the pixel conversion and the freeing of the lists) lets other
    threads, the event loop's included, run every few milliseconds on a 16 x 256 x 256 pixel batch."""
    from service.protocols import codec, oip

    content = routes.json_pixels(body, np.full((16, 256, 256, 3), 7, dtype=np.uint8))
    parsers: dict[Body, Callable[[], Any]] = {
        Body.TFSERVING_JSON: lambda: codec.parse_instances(content, 16, 1 << 24),
        Body.OIP: lambda: oip.parse_request(content, None, 16, 1 << 24),
    }
    assert set(parsers) == set(routes.JSON_BODIES)
    held = _longest_gil_hold(parsers[body])
    assert held < GIL_HOLD_BOUND_S, held
