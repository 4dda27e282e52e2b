"""The stage runner: records, reuse on --resume, invalidation of later stages, --from-stage, timing, progress."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from training.stages import STAGES, Progress, Stages


def _compute(calls: list[str], name: str, value: int):
    def run() -> dict:
        calls.append(name)
        return {"value": value}

    return run


def test_a_finished_stage_is_recorded_with_its_times(tmp_path: Path) -> None:
    stages = Stages(tmp_path, resume=False)

    def busy() -> dict:
        end = time.process_time() + 0.05
        while time.process_time() < end:  # CPU time, not only wall time
            pass
        return {"value": 1}

    assert stages.run("probe", {"c": [0.1]}, busy) == {"value": 1}
    record = json.loads((tmp_path / "stages" / "probe.json").read_text())
    assert record["key"] == {"c": [0.1]} and record["result"] == {"value": 1}
    assert record["times"]["cpu_s"] >= 0.0 and record["times"]["wall_s"] >= record["times"]["cpu_s"] - 0.1
    assert stages.times["probe"]["resumed"] is False


def test_resume_reuses_stages_with_the_same_options_only(tmp_path: Path) -> None:
    calls: list[str] = []
    first = Stages(tmp_path, resume=False)
    first.run("probe", {"c": 1}, _compute(calls, "probe", 1))
    first.run("mix", {"a": 1}, _compute(calls, "mix", 2))
    again = Stages(tmp_path, resume=True)
    assert again.run("probe", {"c": 1}, _compute(calls, "probe", 9)) == {"value": 1}
    assert again.run("mix", {"a": 1}, _compute(calls, "mix", 9)) == {"value": 2}
    assert calls == ["probe", "mix"] and again.times["mix"]["resumed"] is True
    changed = Stages(tmp_path, resume=True)
    assert changed.run("probe", {"c": 2}, _compute(calls, "probe", 3)) == {"value": 3}, "new options: run again"
    assert changed.run("mix", {"a": 1}, _compute(calls, "mix", 4)) == {"value": 4}, "after a rerun: run again"
    assert calls == ["probe", "mix", "probe", "mix"]


def test_without_resume_nothing_is_reused(tmp_path: Path) -> None:
    calls: list[str] = []
    Stages(tmp_path, resume=False).run("probe", {}, _compute(calls, "probe", 1))
    fresh = Stages(tmp_path, resume=False)
    assert not (tmp_path / "stages" / "probe.json").exists()
    assert fresh.run("probe", {}, _compute(calls, "probe", 2)) == {"value": 2}


def test_from_stage_runs_that_stage_and_the_later_ones(tmp_path: Path) -> None:
    calls: list[str] = []
    first = Stages(tmp_path, resume=False)
    for name in ("probe", "mix", "temperature"):
        first.run(name, {}, _compute(calls, name, 1))
    redo = Stages(tmp_path, resume=True, from_stage="mix")
    assert not redo.partial_results_valid("mix") and redo.partial_results_valid("probe")
    for name in ("probe", "mix", "temperature"):
        redo.run(name, {}, _compute(calls, name, 2))
    assert calls == ["probe", "mix", "temperature", "mix", "temperature"]
    with pytest.raises(ValueError, match="--from-stage"):
        Stages(tmp_path, resume=True, from_stage="finetune")


def test_an_earlier_rerun_invalidates_later_records(tmp_path: Path) -> None:
    calls: list[str] = []
    Stages(tmp_path, resume=False).run("mix", {}, _compute(calls, "mix", 1))
    stages = Stages(tmp_path, resume=True)
    stages.mark_rerun()  # e.g. fine-tuning trained again
    assert stages.stored("mix", {}) is None
    stages.run("mix", {}, _compute(calls, "mix", 2))
    assert calls == ["mix", "mix"]


def test_the_stage_order() -> None:
    assert STAGES[:2] == ("prepare", "finetune") and STAGES[-1] == "publish"
    assert STAGES.index("mix") < STAGES.index("temperature") < STAGES.index("export") < STAGES.index("thresholds")


def test_progress_logs_at_most_every_interval_and_at_the_end(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="training")
    progress = Progress("features", 100, interval=3600)
    for _ in range(10):
        progress.update(10)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["features: 100/100 (100%), 0 s elapsed"]
    eager = Progress("bank", 4, interval=0.0)
    eager.update(1)
    assert caplog.records[-1].getMessage().startswith("bank: 1/4 (25%)")
