"""Dynamic batching: images from concurrent requests are inferred together by worker threads.

A request first *reserves* room for its images (refused at once with 503 + ``Retry-After`` when the bounded
queue is full, before any decoding work is spent), decodes them, then *submits* them and awaits one future
per image. A free worker takes everything queued up to ``max_batch_size``; it waits up to ``max_wait_ms``
for more only while other admitted requests are still decoding, so a lone request never waits. Inference runs
in the worker thread, off the event loop, and each result goes back to the future of its own image. With
``workers > 1`` (one per inference stream of the runtime) several batches are inferred at once: on a CPU,
single-threaded streams keep every core busy without the threads of one inference waiting on each other.

Each submission names the model that runs it (the one whose preprocessing decoded its images): a batch holds
only images of one model, so during a hot reload a request is served end to end by one model version.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from service import metrics, mime
from service.errors import ModelNotReadyError, OverloadedError

log = logging.getLogger(__name__)

PredictFn = Callable[[np.ndarray], np.ndarray]


class Predictor(Protocol):
    """A model version: images [N, S, S, 3] -> one result row per image (``LoadedModel.infer``)."""

    def infer(self, images: np.ndarray) -> np.ndarray: ...


@dataclass
class _Item:
    image: np.ndarray
    model: Predictor | None  # None: the batcher's default predict function
    future: concurrent.futures.Future[np.ndarray] = field(default_factory=concurrent.futures.Future)
    enqueued: float = field(default_factory=time.perf_counter)


class Batcher:
    """Bounded queue + one worker thread that runs ``predict`` on batches of queued images."""

    def __init__(
        self,
        predict: PredictFn,
        max_batch_size: int = 8,
        max_wait_ms: float = 2.0,
        max_queue_size: int = 64,
        retry_after_s: int = 1,
        workers: int = 1,
    ) -> None:
        if workers < 1:
            raise ValueError("a batcher needs at least one worker")
        self._predict = predict
        self.workers = workers
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue_size = max_queue_size
        self.retry_after_s = retry_after_s
        self._queue: deque[_Item] = deque()
        self._reserved = 0  # images admitted whose request is still decoding
        self._cond = threading.Condition()
        self._stopping = False
        self._threads: list[threading.Thread] = []

    @property
    def depth(self) -> int:
        """Images admitted and not yet taken into a batch."""
        return self._reserved + len(self._queue)

    def start(self) -> None:
        """Start the worker threads (idempotent)."""
        if not self._threads:
            self._stopping = False
            self._threads = [
                threading.Thread(target=self._run, name=f"mri-batcher-{i}", daemon=True) for i in range(self.workers)
            ]
            for thread in self._threads:
                thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish what is queued or still decoding (for up to ``timeout`` seconds), then stop the workers."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            self._threads = []

    @contextmanager
    def reserve(self, count: int) -> Iterator[Reservation]:
        """Admit ``count`` images or raise ``OverloadedError`` (503 + Retry-After) when the queue is full."""
        with self._cond:
            if self._stopping or not self._threads:
                raise ModelNotReadyError("the service is shutting down")
            if self.depth + count > self.max_queue_size:
                metrics.REJECTED.inc()
                raise OverloadedError(
                    "server busy: the inference queue is full; retry later",
                    headers={mime.RETRY_AFTER: str(self.retry_after_s)},
                )
            self._reserved += count
            metrics.QUEUE_DEPTH.set(self.depth)
        reservation = Reservation(self, count)
        try:
            yield reservation
        finally:
            if not reservation.submitted:
                with self._cond:
                    self._reserved -= count
                    metrics.QUEUE_DEPTH.set(self.depth)
                    self._cond.notify_all()

    def _enqueue(
        self, reserved: int, images: np.ndarray, model: Predictor | None
    ) -> list[concurrent.futures.Future[np.ndarray]]:
        items = [_Item(image, model) for image in images]
        with self._cond:
            self._reserved -= reserved
            if not self._threads:  # stopped while this request was decoding: nobody will run it
                for item in items:
                    item.future.set_exception(ModelNotReadyError("the service is shutting down"))
                return [item.future for item in items]
            self._queue.extend(items)
            metrics.QUEUE_DEPTH.set(self.depth)
            self._cond.notify_all()
        return [item.future for item in items]

    def _take(self, batch: list[_Item]) -> None:
        """Move queued images into ``batch`` while they are for the same model as its first one (FIFO: an
        image for another model ends the batch and starts the next)."""
        while self._queue and len(batch) < self.max_batch_size:
            if batch and self._queue[0].model is not batch[0].model:
                return
            batch.append(self._queue.popleft())

    def _next_batch(self) -> list[_Item] | None:
        """Block for the first image, take what is queued, wait briefly only for requests still decoding."""
        with self._cond:
            while not self._queue:
                if self._stopping and self._reserved == 0:  # drained: nothing queued, nothing decoding
                    return None
                self._cond.wait()
            batch: list[_Item] = []
            self._take(batch)
            deadline = time.perf_counter() + self.max_wait_s
            while len(batch) < self.max_batch_size and self._reserved > 0 and not self._other_model_waits(batch):
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
                self._take(batch)
            metrics.QUEUE_DEPTH.set(self.depth)
            return batch

    def _other_model_waits(self, batch: list[_Item]) -> bool:
        return bool(self._queue) and self._queue[0].model is not batch[0].model

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            batch = [item for item in batch if item.future.set_running_or_notify_cancel()]
            if batch:
                self._execute(batch)

    def _execute(self, batch: list[_Item]) -> None:
        started = time.perf_counter()
        for item in batch:
            metrics.STAGE_LATENCY.labels(stage="queue").observe(started - item.enqueued)
        try:
            model = batch[0].model
            predict = self._predict if model is None else model.infer
            probs = predict(np.stack([item.image for item in batch]))
            if len(probs) != len(batch):
                raise RuntimeError(f"model returned {len(probs)} results for a batch of {len(batch)}")
        except Exception as exc:
            if not isinstance(exc, ModelNotReadyError):
                log.exception("inference failed on a batch of %d", len(batch))
            for item in batch:
                item.future.set_exception(exc)
            return
        metrics.STAGE_LATENCY.labels(stage="inference").observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.observe(len(batch))
        for item, row in zip(batch, probs, strict=True):
            item.future.set_result(row)


class Reservation:
    """Room admitted in the queue for one request's images; ``submit`` them once decoded."""

    def __init__(self, batcher: Batcher, count: int) -> None:
        self._batcher = batcher
        self.count = count
        self.submitted = False

    async def submit(self, images: np.ndarray, model: Predictor | None = None) -> np.ndarray:
        """Queue decoded images [k, S, S, 3] and await their probabilities [k, 4], in the same order, from
        ``model`` (the version that decoded them; default: the batcher's predict function)."""
        if self.submitted:
            raise RuntimeError("a reservation is submitted once")
        self.submitted = True
        futures = self._batcher._enqueue(self.count, images, model)
        rows = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
        return np.stack(rows)
