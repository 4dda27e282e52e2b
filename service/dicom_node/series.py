"""Series and studies as units: which result series each received series writes to, when a series is complete
(quiet for ``series_quiet_s`` with nothing left to classify), and the one log line per study.

Only the node's event loop thread touches a ``SeriesTracker``. A study is known in the log by a random token
made when its first slice arrives: no UID or other value of the study ever reaches the log.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from service.protocols.dicom_results import Algorithm, SourceImage, new_uid
from service.schemas import Prediction

#: A series whose summary would list more slices than this is closed early (its summary made), and the next
#: slices start a new summary: a summary SR stays a reasonable size.
MAX_SUMMARY_SLICES = 2000


@dataclass(eq=False)
class StudyState:
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    open_series: int = 0
    series: int = 0
    received: int = 0
    classified: int = 0
    failed: int = 0
    warnings: int = 0
    classes: Counter[str] = field(default_factory=Counter)

    def log_line(self) -> str:
        classes = ", ".join(f"{name} {count}" for name, count in sorted(self.classes.items())) or "none"
        return (
            f"study {self.token} complete: {self.series} series, {self.received} slice(s) received, "
            f"{self.classified} classified, {self.failed} failed, {self.warnings} with an input warning; "
            f"predicted classes: {classes}"
        )


@dataclass(eq=False)
class SeriesState:
    """One received series: its result series and the slices classified so far."""

    study: StudyState
    last_activity: float
    sr_series_uid: str = field(default_factory=new_uid)
    sc_series_uid: str = field(default_factory=new_uid)
    summary_series_uid: str = field(default_factory=new_uid)
    pending: int = 0
    next_sr: int = 0
    next_sc: int = 0
    slices: list[tuple[SourceImage, Prediction]] = field(default_factory=list)
    algorithm: Algorithm | None = None
    last_received: float = 0.0

    def sr_number(self) -> int:
        self.next_sr += 1
        return self.next_sr

    def sc_number(self) -> int:
        self.next_sc += 1
        return self.next_sc


class SeriesTracker:
    """The open series by (study, series) UID, and their studies."""

    def __init__(self, quiet_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.quiet_s = quiet_s
        self.clock = clock
        self._series: dict[tuple[str, str], SeriesState] = {}
        self._studies: dict[str, StudyState] = {}

    def __len__(self) -> int:
        return len(self._series)

    def received(self, source: SourceImage) -> SeriesState:
        """A slice of ``source``'s series arrived and waits for classification."""
        dataset: Any = source.dataset
        study_uid, series_uid = str(dataset.StudyInstanceUID), str(dataset.SeriesInstanceUID)
        study = self._studies.get(study_uid)
        if study is None:
            study = self._studies[study_uid] = StudyState()
        key = (study_uid, series_uid)
        series = self._series.get(key)
        now = self.clock()
        if series is None:
            series = self._series[key] = SeriesState(study, now)
            study.open_series += 1
            study.series += 1
        series.pending += 1
        series.last_activity = series.last_received = now
        study.received += 1
        return series

    def classified(
        self, series: SeriesState, source: SourceImage, prediction: Prediction, algorithm: Algorithm
    ) -> None:
        series.pending -= 1
        series.last_activity = self.clock()
        series.slices.append((source, prediction))
        series.algorithm = series.algorithm or algorithm
        study = series.study
        study.classified += 1
        study.classes[prediction.label] += 1
        study.warnings += int(prediction.check is not None and prediction.check.warning)

    def failed(self, series: SeriesState) -> None:
        series.pending -= 1
        series.last_activity = self.clock()
        series.study.failed += 1

    def close_quiet(self, everything: bool = False) -> tuple[list[SeriesState], list[StudyState]]:
        """Remove and return the series that are complete (all of them with ``everything``, at shutdown), and
        the studies that have no open series left."""
        now = self.clock()
        closed = []
        for key, series in list(self._series.items()):
            full = len(series.slices) >= MAX_SUMMARY_SLICES
            if everything or full or (series.pending == 0 and now - series.last_activity >= self.quiet_s):
                del self._series[key]
                series.study.open_series -= 1
                closed.append(series)
        finished = []
        for uid, study in list(self._studies.items()):
            if study.open_series == 0:
                del self._studies[uid]
                finished.append(study)
        return closed, finished
