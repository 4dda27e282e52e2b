"""The linear probe: logistic regression on the frozen ImageNet backbone's features of the training split.

It is the first end of the WiSE-FT weight mix (:mod:`training.mix`): a model whose backbone is the untouched
ImageNet one and whose head is the probe, built by :func:`probe_model`. The regularisation ``C`` is chosen on
the validation split's accuracy from the recipe's grid (ties go to the smaller ``C``); class weights balance
the classes as fine-tuning does (:func:`training.data.class_weights`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from training.data import class_weights

if TYPE_CHECKING:
    import keras

MAX_ITER = 3000


@dataclass
class ProbeResult:
    """The chosen probe and the sweep that chose it."""

    c: float
    coef: np.ndarray  # [D, classes], the Dense kernel
    intercept: np.ndarray  # [classes]
    sweep: list[dict[str, float]]  # {"c", "val_accuracy"} per C tried

    def summary(self) -> dict[str, Any]:
        return {"c": self.c, "sweep": self.sweep, "classifier": "logistic regression, balanced class weights"}


def fit_probe(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    val_features: np.ndarray,
    val_labels: np.ndarray,
    cs: tuple[float, ...] | list[float],
) -> ProbeResult:
    """Fit one probe per ``C``; keep the one with the highest validation accuracy (the first on ties)."""
    from sklearn.linear_model import LogisticRegression

    if not cs:
        raise ValueError("--probe-c: at least one value")
    weights = class_weights(train_labels)
    best: tuple[float, float, Any] | None = None
    sweep = []
    for c in cs:
        clf = LogisticRegression(C=float(c), max_iter=MAX_ITER, class_weight=weights)
        clf.fit(train_features, train_labels)
        accuracy = float(np.mean(clf.predict(val_features) == val_labels))
        sweep.append({"c": float(c), "val_accuracy": accuracy})
        if best is None or accuracy > best[0]:
            best = (accuracy, float(c), clf)
    assert best is not None
    _, c, clf = best
    coef, intercept = _full_head(clf, int(train_features.shape[1]))
    return ProbeResult(c, coef, intercept, sweep)


def _full_head(clf: Any, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The probe as a Dense layer over every class (a class absent from the training labels gets -inf-like
    logits, so it is never predicted)."""
    from service.labels import NUM_CLASSES

    coef = np.zeros((dim, NUM_CLASSES), np.float32)
    intercept = np.full(NUM_CLASSES, -1e4, np.float32)
    classes = [int(c) for c in clf.classes_]
    if len(classes) == 2:  # binary logistic regression keeps one row: class 1 vs class 0
        coef[:, classes[1]], intercept[classes[1]] = clf.coef_[0] / 2, clf.intercept_[0] / 2
        coef[:, classes[0]], intercept[classes[0]] = -clf.coef_[0] / 2, -clf.intercept_[0] / 2
    else:
        for row, cls in enumerate(classes):
            coef[:, cls], intercept[cls] = clf.coef_[row], clf.intercept_[row]
    return coef, intercept


def probe_model(
    image_size: int, weights: str, backbone: str, dropout: float, coef: np.ndarray, intercept: np.ndarray
) -> keras.Model:
    """The classifier with the ImageNet backbone (``weights``) and the probe as its head."""
    from training.model import LOGITS_LAYER, build_model

    model = build_model(image_size, weights, backbone, dropout)
    model.get_layer(LOGITS_LAYER).set_weights([np.asarray(coef, np.float32), np.asarray(intercept, np.float32)])
    return model
