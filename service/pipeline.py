"""The decode -> predict step shared by every prediction route (encoding is left to each route).

Decoding runs in a worker thread (never on the event loop) after the batcher has admitted the images, so
an overloaded server refuses work before spending CPU on it; prediction is awaited from the batcher.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from starlette.concurrency import run_in_threadpool

from service import metrics
from service.batching import Batcher


async def classify(batcher: Batcher, count: int, decode: Callable[[], np.ndarray]) -> np.ndarray:
    """Admit ``count`` images, run ``decode`` (-> uint8 [count, S, S, 3]) off the loop, await probabilities."""
    with batcher.reserve(count) as reservation:
        started = time.perf_counter()
        images = await run_in_threadpool(decode)
        metrics.STAGE_LATENCY.labels(stage="decode").observe(time.perf_counter() - started)
        return await reservation.submit(images)
