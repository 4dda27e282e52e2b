"""A real loaded model whose batches can be held, slowed down, recorded or made to fail: the model version that
the batcher runs (``LoadedModel.infer``), so that tests control inference exactly where it happens."""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import numpy as np

from service.inference.classifier import Classifier, LoadedModel


class Hold:
    """What a held model does on each batch: signal ``entered``, wait for ``release``, sleep ``delay`` (and
    ``delay_once`` the first time), raise ``failure`` if set, record the batch size, then predict."""

    def __init__(self, delay: float = 0.0, failure: str | None = None) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.delay = delay
        self.delay_once = 0.0
        self.failure = failure
        self.batches: list[int] = []


@dataclasses.dataclass(frozen=True)
class HeldModel(LoadedModel):
    hold: Hold = dataclasses.field(default_factory=Hold)

    def infer(self, images: np.ndarray) -> Any:
        hold = self.hold
        hold.entered.set()
        assert hold.release.wait(60)
        delay, hold.delay_once = hold.delay_once, 0.0
        time.sleep(hold.delay + delay)
        if hold.failure:
            raise RuntimeError(hold.failure)
        hold.batches.append(len(images))
        return super().infer(images)


def held_classifier(inner: Classifier, hold: Hold) -> Classifier:
    """A classifier serving ``inner``'s loaded model through ``hold``."""
    model = inner.model
    fields = {field.name: getattr(model, field.name) for field in dataclasses.fields(model)}
    classifier = Classifier(inner.settings)
    classifier.use(HeldModel(**fields, hold=hold))
    return classifier
