"""The dynamic batcher on its own: batch formation, result routing, backpressure, waiting policy, errors."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from service.errors import ModelNotReadyError, OverloadedError
from service.inference.batching import Batcher


class FakeModel:
    """'Probabilities' that encode the image: row i = [value, value + 1, ...]; records batch sizes."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.batches: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        self.entered.set()
        assert self.gate.wait(10)
        time.sleep(self.delay)
        self.batches.append(len(images))
        value = images.reshape(len(images), -1)[:, :1].astype(np.float32)
        return value + np.arange(4, dtype=np.float32)


def image(value: int) -> np.ndarray:
    return np.full((1, 2, 2, 3), value, dtype=np.uint8)


async def classify(batcher: Batcher, *values: int) -> np.ndarray:
    with batcher.reserve(len(values)) as reservation:
        await asyncio.sleep(0)  # decoding happens here
        return await reservation.submit(np.concatenate([image(v) for v in values]))


@pytest.fixture
def make_batcher():
    started: list[Batcher] = []

    def _make(model: FakeModel, **kwargs) -> Batcher:
        batcher = Batcher(model, **kwargs)
        batcher.start()
        started.append(batcher)
        return batcher

    yield _make
    for batcher in started:
        batcher.stop()


def test_concurrent_requests_share_batches_and_get_their_own_answers(make_batcher):
    model = FakeModel(delay=0.02)
    batcher = make_batcher(model, max_batch_size=8, max_wait_ms=5, max_queue_size=64)

    async def main() -> list[np.ndarray]:
        return await asyncio.gather(*(classify(batcher, v) for v in range(40)))

    results = asyncio.run(main())
    for value, result in enumerate(results):
        assert result.tolist() == [[value, value + 1, value + 2, value + 3]]
    assert sum(model.batches) == 40
    assert max(model.batches) == 8
    assert len(model.batches) < 40


def test_a_multi_image_request_keeps_its_order(make_batcher):
    batcher = make_batcher(FakeModel(), max_batch_size=2)
    result = asyncio.run(classify(batcher, 7, 3, 9, 1, 5))
    assert result[:, 0].tolist() == [7, 3, 9, 1, 5]


def test_a_lone_request_does_not_wait(make_batcher):
    """With nothing else admitted, the batch goes at once: a 60 s ``max_wait_ms`` that it waited for would take
    the request past the 20 s bound, which no busy machine takes for one tiny fake batch."""
    model = FakeModel()
    batcher = make_batcher(model, max_batch_size=8, max_wait_ms=60_000)

    async def main() -> np.ndarray:
        return await asyncio.wait_for(classify(batcher, 1), timeout=20)

    for _ in range(2):  # the first request, and one after the worker went back to waiting for work
        assert asyncio.run(main()).tolist() == [[1, 2, 3, 4]]
    assert model.batches == [1, 1]


def test_waits_for_requests_still_decoding(make_batcher):
    model = FakeModel()
    batcher = make_batcher(model, max_batch_size=8, max_wait_ms=300)

    async def slow_decoder() -> np.ndarray:
        with batcher.reserve(1) as reservation:
            await asyncio.sleep(0.05)
            return await reservation.submit(image(2))

    async def main() -> None:
        await asyncio.gather(classify(batcher, 1), slow_decoder())

    asyncio.run(main())
    assert model.batches == [2]


def test_full_queue_is_refused_with_retry_after(make_batcher):
    model = FakeModel()
    model.gate.clear()
    batcher = make_batcher(model, max_batch_size=1, max_queue_size=3, retry_after_s=2)

    async def main() -> None:
        first = asyncio.ensure_future(classify(batcher, 0))
        await asyncio.to_thread(model.entered.wait, 10)  # the worker is busy with the first image
        with batcher.reserve(3):
            with pytest.raises(OverloadedError) as excinfo, batcher.reserve(1):
                pass
            assert excinfo.value.status_code == 503
            assert excinfo.value.headers == {"Retry-After": "2"}
        with batcher.reserve(3):  # released again when the request failed before submitting
            pass
        model.gate.set()
        await first

    asyncio.run(main())
    assert batcher.depth == 0


def test_inference_errors_reach_every_request_of_the_batch(make_batcher):
    def broken(images: np.ndarray) -> np.ndarray:
        raise RuntimeError("boom")

    batcher = make_batcher(broken)  # type: ignore[arg-type]

    async def main() -> list[object]:
        return await asyncio.gather(classify(batcher, 1), classify(batcher, 2), return_exceptions=True)

    assert all(isinstance(r, RuntimeError) for r in asyncio.run(main()))
    assert batcher.depth == 0


def test_stop_finishes_queued_work_then_refuses(make_batcher):
    model = FakeModel(delay=0.01)
    batcher = make_batcher(model, max_batch_size=2)

    async def main() -> list[np.ndarray]:
        tasks = [asyncio.ensure_future(classify(batcher, v)) for v in range(6)]
        await asyncio.sleep(0.005)
        await asyncio.to_thread(batcher.stop)
        return await asyncio.gather(*tasks)

    assert [r[0, 0] for r in asyncio.run(main())] == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ModelNotReadyError), batcher.reserve(1):
        pass


def test_stop_waits_for_a_request_still_decoding(make_batcher):
    batcher = make_batcher(FakeModel(), max_batch_size=2)

    async def main() -> np.ndarray:
        with batcher.reserve(1) as reservation:
            stopping = asyncio.ensure_future(asyncio.to_thread(batcher.stop))
            await asyncio.sleep(0.05)
            assert not stopping.done()  # the worker keeps running for the admitted request
            result = await reservation.submit(image(4))
        await stopping
        return result

    assert asyncio.run(main())[0, 0] == 4


def test_workers_infer_batches_side_by_side(make_batcher):
    """With two workers (one per inference stream) two batches are inferred at once: each call waits at a
    barrier that only opens when both are inside the model (one worker would time out there)."""
    barrier = threading.Barrier(2, timeout=10)
    model = FakeModel()

    def predict(images: np.ndarray) -> np.ndarray:
        barrier.wait()
        return model(images)

    batcher = make_batcher(predict, workers=2, max_batch_size=1)

    async def main() -> list[np.ndarray]:
        return await asyncio.gather(classify(batcher, 1), classify(batcher, 2))

    first, second = asyncio.run(main())
    assert first[:, 0].tolist() == [1] and second[:, 0].tolist() == [2]
    assert model.batches == [1, 1]


def test_a_batcher_needs_a_worker():
    with pytest.raises(ValueError, match="at least one worker"):
        Batcher(FakeModel(), workers=0)
