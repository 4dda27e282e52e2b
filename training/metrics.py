"""Classification and calibration metrics shared by training (validation) and evaluation (test)."""

from __future__ import annotations

import math
from itertools import pairwise
from typing import Any

import numpy as np
from sklearn.metrics import f1_score, log_loss, roc_auc_score

from service.labels import CLASSES, NUM_CLASSES

Z95 = 1.959963984540054


def wilson_interval(successes: int, total: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval for a proportion (``(nan, nan)`` when ``total`` is 0)."""
    if total == 0:
        return (math.nan, math.nan)
    p = successes / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE with equal-width confidence bins (top-label calibration)."""
    if len(labels) == 0:
        return math.nan
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in pairwise(edges):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> list[dict[str, float]]:
    """Per-bin confidence, accuracy and count for a reliability diagram."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    out = []
    for lo, hi in pairwise(edges):
        in_bin = (confidence > lo) & (confidence <= hi)
        n = int(in_bin.sum())
        out.append(
            {
                "lo": float(lo),
                "hi": float(hi),
                "count": n,
                "confidence": float(confidence[in_bin].mean()) if n else math.nan,
                "accuracy": float(correct[in_bin].mean()) if n else math.nan,
            }
        )
    return out


def confusion(labels: np.ndarray, predicted: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Confusion matrix: rows are true classes, columns predicted classes."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def classification_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro F1, per-class sensitivity/specificity/precision with 95% Wilson
    intervals, one-vs-rest AUROC, log-loss, ECE (15 bins) and the confusion matrix."""
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    predicted = probs.argmax(axis=1) if n else np.zeros(0, dtype=np.int64)
    matrix = confusion(labels, predicted)
    correct = int(np.trace(matrix))
    per_class: dict[str, Any] = {}
    recalls = []
    for c, name in enumerate(CLASSES):
        tp = int(matrix[c, c])
        fn = int(matrix[c].sum() - tp)
        fp = int(matrix[:, c].sum() - tp)
        tn = n - tp - fn - fp
        sens = tp / (tp + fn) if tp + fn else math.nan
        spec = tn / (tn + fp) if tn + fp else math.nan
        prec = tp / (tp + fp) if tp + fp else math.nan
        if tp + fn:
            recalls.append(sens)
        auroc = math.nan
        positives = labels == c
        if 0 < positives.sum() < n:
            auroc = float(roc_auc_score(positives, probs[:, c]))
        per_class[name] = {
            "support": tp + fn,
            "sensitivity": sens,
            "sensitivity_ci95": wilson_interval(tp, tp + fn),
            "specificity": spec,
            "specificity_ci95": wilson_interval(tn, tn + fp),
            "precision": prec,
            "precision_ci95": wilson_interval(tp, tp + fp),
            "auroc": auroc,
        }
    return {
        "n": n,
        "accuracy": correct / n if n else math.nan,
        "accuracy_ci95": wilson_interval(correct, n),
        "balanced_accuracy": float(np.mean(recalls)) if recalls else math.nan,
        "macro_f1": float(
            f1_score(labels, predicted, labels=list(range(NUM_CLASSES)), average="macro", zero_division=0)
        )
        if n
        else math.nan,
        "log_loss": float(log_loss(labels, np.clip(probs, 1e-7, 1.0), labels=list(range(NUM_CLASSES))))
        if n
        else math.nan,
        "ece_15": expected_calibration_error(probs, labels, 15),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "classes": list(CLASSES),
    }


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Numerically stable softmax of ``logits / temperature`` along the last axis."""
    z = logits / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature minimising the negative log-likelihood of ``labels`` (fitted on validation only)."""
    from scipy.optimize import minimize_scalar

    labels = np.asarray(labels, dtype=np.int64)

    def nll(log_t: float) -> float:
        p = softmax(logits, math.exp(log_t))
        return float(-np.log(np.clip(p[np.arange(len(labels)), labels], 1e-12, 1.0)).mean())

    result = minimize_scalar(nll, bounds=(math.log(0.05), math.log(20.0)), method="bounded")
    return float(math.exp(result.x))


def calibration_split(labels: np.ndarray, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """Validation indices split in two halves, stratified by class and fixed by ``seed``: the first fits the
    temperature, the second measures the result. Unstratified when a class has a single image; the same
    indices twice when there are fewer than 4 images (nothing to hold out)."""
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels)
    idx = np.arange(len(labels))
    if len(idx) < 4:
        return idx, idx
    try:
        fit, held = train_test_split(idx, test_size=0.5, random_state=seed, stratify=labels)
    except ValueError:  # a class with one image cannot be stratified
        fit, held = train_test_split(idx, test_size=0.5, random_state=seed)
    return np.sort(fit), np.sort(held)


def warning_metrics(score: np.ndarray, correct: np.ndarray, rounds: int = 1000, seed: int = 0) -> dict[str, Any]:
    """How well an answer's warning score (warned when ``score > 1``, ``checks.input_check``) singles out wrong answers:
    the error-detection AUROC (wrong answers should score higher; 95% percentile-bootstrap interval over images)
    and the shares of correct and of wrong answers warned (95% Wilson intervals)."""
    score, correct = np.asarray(score, dtype=np.float64), np.asarray(correct, dtype=bool)
    wrong = ~correct
    n_ok, n_wrong = int(correct.sum()), int(wrong.sum())
    out: dict[str, Any] = {"images": len(score), "correct": n_ok, "wrong": n_wrong}
    if n_ok == 0 or n_wrong == 0:
        return out
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(rounds):
        idx = rng.integers(0, len(score), len(score))
        if 0 < wrong[idx].sum() < len(idx):
            boot.append(roc_auc_score(wrong[idx], score[idx]))
    warned = score > 1
    ok_warned, wrong_warned = int(warned[correct].sum()), int(warned[wrong].sum())
    out.update(
        {
            "error_auroc": float(roc_auc_score(wrong, score)),
            "error_auroc_ci95": [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))],
            "correct_warned": ok_warned / n_ok,
            "correct_warned_ci95": list(wilson_interval(ok_warned, n_ok)),
            "wrong_warned": wrong_warned / n_wrong,
            "wrong_warned_ci95": list(wilson_interval(wrong_warned, n_wrong)),
        }
    )
    return out
