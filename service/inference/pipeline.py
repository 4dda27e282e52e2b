"""The decode -> predict step shared by every prediction route (encoding is left to each route).

Decoding runs in a worker thread (never on the event loop) after the batcher has admitted the images, so
an overloaded server refuses work before spending CPU on it; prediction is awaited from the batcher. At most
``MRI_MAX_CONCURRENT_DECODES`` decodes run at once: a small file can decode to hundreds of MB (about 25 bytes
per pixel at the peak), so their number, not only their size, must be bounded.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable

import numpy as np
from starlette.concurrency import run_in_threadpool

from service import metrics
from service.checks import input_check
from service.inference.batching import Batcher, Predictor
from service.inference.runtime import OOD_OUTPUT, OUTPUT_NAME

_decode_limit = 2
#: One semaphore per event loop (tests run several apps): requests wait for a decode slot on the loop,
#: holding no worker thread, so probes and other requests never queue behind them.
_decode_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


def limit_decodes(count: int) -> None:
    """Let at most ``count`` decodes run at once in this process (set from the settings by the app)."""
    global _decode_limit
    _decode_limit = count
    _decode_slots.clear()


def decode_slots() -> asyncio.Semaphore:
    """The decode semaphore of the running event loop."""
    loop = asyncio.get_running_loop()
    slots = _decode_slots.get(loop)
    if slots is None:
        slots = _decode_slots[loop] = asyncio.Semaphore(_decode_limit)
    return slots


async def classify(batcher: Batcher, model: Predictor, count: int, decode: Callable[[], np.ndarray]) -> np.ndarray:
    """Admit ``count`` images, run ``decode`` (-> uint8 [count, S, S, 3]) off the loop, await their result rows
    from ``model``: the version whose preprocessing ``decode`` uses (required, so that a request is served end to
    end by one version even when a reload lands in between)."""
    with batcher.reserve(count) as reservation:
        started = time.perf_counter()
        async with decode_slots():
            images = await run_in_threadpool(decode)
        metrics.STAGE_LATENCY.labels(stage="decode").observe(time.perf_counter() - started)
        return await reservation.submit(images, model)


async def classify_checked(
    batcher: Batcher, model: Predictor, count: int, decode: Callable[[], np.ndarray], thresholds: input_check.Thresholds
) -> tuple[np.ndarray, np.ndarray, list[input_check.Check]]:
    """``classify`` (on ``model``) that also keeps the decoded images and checks them:
    (images, probs, checks); each warning's reasons are counted in ``mri_warnings_total``. The batcher answers
    ``classifier.OUTPUT_DTYPE`` rows (probabilities and the model's ood_score); the image statistics are
    computed in the decode thread, never on the loop."""
    kept: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []

    def decode_and_measure() -> np.ndarray:
        images = decode()
        kept.append((images, input_check.image_scores(images)))
        return images

    rows = await classify(batcher, model, count, decode_and_measure)
    (images, image_stats), probs = kept[0], np.asarray(rows[OUTPUT_NAME])
    stats = input_check.with_model_outputs(image_stats, probs, np.asarray(rows[OOD_OUTPUT]))
    checks = input_check.check_scores(stats, thresholds)
    for result in checks:
        for reason in result.reasons:
            metrics.WARNINGS.labels(reason=reason).inc()
    return images, probs, checks
