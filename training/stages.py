"""The stages of a training job: timed, logged, recorded in the work folder, and resumable.

Each stage that finishes writes ``<work_dir>/stages/<name>.json``: what it was run with (its *key*: the options
that decide its result), its result (small JSON; arrays and weights go to files beside it) and its wall and CPU
time (``time.perf_counter`` and ``time.process_time``, every thread of the process). With ``--resume`` a
stage whose record has the same key is not run again and its record's result is used; once one stage runs
again, every later stage does too. ``--from-stage NAME`` runs ``NAME`` and the stages after it again.

Long stages log their progress (:class:`Progress`) at most every ``interval`` seconds, so a job started with
``--no-progress`` (containers, CI) still says how far it is and how long it has taken.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger("training")

#: The stages of ``mri-classifier train``, in order.
STAGES = (
    "prepare",
    "finetune",
    "probe",
    "mix",
    "temperature",
    "ood_bank",
    "export",
    "thresholds",
    "report",
    "publish",
)
#: Stages that can be asked to run again with ``--from-stage`` (data and fine-tuning resume by themselves).
REDOABLE = STAGES[2:]

T = TypeVar("T")


class Progress:
    """Logs ``desc: done/total (pct), elapsed`` at most every ``interval`` seconds, and once at the end."""

    def __init__(self, desc: str, total: int, interval: float = 30.0) -> None:
        self.desc, self.total, self.interval = desc, max(int(total), 0), interval
        self.done = 0
        self.started = self._last = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self._last >= self.interval or self.done >= self.total:
            self._last = now
            share = f" ({self.done / self.total:.0%})" if self.total else ""
            log.info("%s: %d/%d%s, %.0f s elapsed", self.desc, self.done, self.total, share, now - self.started)


class Stages:
    """Runs and records the stages of one job in ``<work_dir>/stages``."""

    def __init__(self, work_dir: Path, resume: bool, from_stage: str | None = None) -> None:
        if from_stage is not None and from_stage not in REDOABLE:
            raise ValueError(f"--from-stage must be one of {', '.join(REDOABLE)}")
        self.dir = Path(work_dir) / "stages"
        if not resume and self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.from_stage = from_stage
        self.rerun = False  # set once a stage has run (again): every later stage runs too
        self.times: dict[str, dict[str, Any]] = {}

    def path(self, name: str) -> Path:
        """A file of the stages folder (a stage's arrays or weights)."""
        return self.dir / name

    def _record_file(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def partial_results_valid(self, name: str) -> bool:
        """Whether what an interrupted run of ``name`` left behind may be reused (no earlier stage ran again and
        ``--from-stage`` does not name it or an earlier stage)."""
        return not self.rerun and not (
            self.from_stage is not None and STAGES.index(name) >= STAGES.index(self.from_stage)
        )

    def stored(self, name: str, key: dict[str, Any]) -> dict[str, Any] | None:
        """The record of ``name`` when it may be reused: it finished with the same key, no earlier stage ran
        again and ``--from-stage`` does not name it or an earlier stage."""
        if not self.partial_results_valid(name):
            return None
        path = self._record_file(name)
        if not path.is_file():
            return None
        record = json.loads(path.read_text())
        if record.get("key") != _jsonable(key):
            log.info("stage %s: its options changed since it ran; running it again", name)
            return None
        return record

    def run(self, name: str, key: dict[str, Any], compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The result of stage ``name``: its stored record's when it may be reused, else ``compute()`` timed,
        logged and recorded."""
        record = self.stored(name, key)
        if record is not None:
            self.times[name] = {**record["times"], "resumed": True}
            log.info("stage %s: done in an earlier run (%.1f s); reusing its result", name, record["times"]["wall_s"])
            return dict(record["result"])
        result, times = timed(name, compute)
        self.rerun = True
        self.record(name, key, result, times)
        return result

    def record(self, name: str, key: dict[str, Any], result: dict[str, Any], times: dict[str, Any]) -> None:
        """Write the record of a finished stage (atomically) and keep its times."""
        self.times[name] = times
        record = {"stage": name, "key": _jsonable(key), "result": _jsonable(result), "times": times}
        path = self._record_file(name)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, path)

    def mark_rerun(self) -> None:
        """An earlier stage produced new results: nothing after it may be reused."""
        self.rerun = True


def timed(name: str, compute: Callable[[], T]) -> tuple[T, dict[str, Any]]:
    """Run ``compute`` and return its result with its wall and CPU seconds; logs the start and the end."""
    log.info("stage %s: started", name)
    wall, cpu = time.perf_counter(), time.process_time()
    result = compute()
    times = {
        "wall_s": round(time.perf_counter() - wall, 1),
        "cpu_s": round(time.process_time() - cpu, 1),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "resumed": False,
    }
    log.info("stage %s: done in %.1f s (CPU %.1f s)", name, times["wall_s"], times["cpu_s"])
    return result, times


def _jsonable(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), so stored and new keys compare equal."""
    return json.loads(json.dumps(value))
