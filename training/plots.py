"""PNG plots of an evaluation: confusion matrices, per-class bars, reliability diagram, training curves."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from service.labels import CLASSES

LABELS = [c.replace("_", " ") for c in CLASSES]


def _confusion(path: Path, matrix: np.ndarray, title: str) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros_like(matrix, dtype=float), where=rows > 0)
    for ax, data, fmt, sub in (
        (axes[0], matrix, "d", "counts"),
        (axes[1], normalised, ".2f", "row-normalised"),
    ):
        ax.imshow(data, cmap="Blues", vmin=0)
        ax.set_xticks(range(len(LABELS)), LABELS, rotation=30, ha="right")
        ax.set_yticks(range(len(LABELS)), LABELS)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(sub)
        peak = data.max() if data.size else 1
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                ax.text(
                    j,
                    i,
                    format(data[i, j], fmt),
                    ha="center",
                    va="center",
                    color="white" if data[i, j] > 0.6 * peak else "black",
                )
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _per_class(path: Path, m: dict[str, Any], title: str) -> None:
    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(len(CLASSES))
    for k, (key, colour) in enumerate(
        (("sensitivity", "#1f77b4"), ("specificity", "#2ca02c"), ("precision", "#ff7f0e"))
    ):
        values = [m["per_class"][c][key] for c in CLASSES]
        ci = [m["per_class"][c][f"{key}_ci95"] for c in CLASSES]
        err = np.array(
            [
                [0 if math.isnan(v) else v - lo for v, (lo, _) in zip(values, ci, strict=True)],
                [0 if math.isnan(v) else hi - v for v, (_, hi) in zip(values, ci, strict=True)],
            ]
        )
        err = np.clip(np.nan_to_num(err), 0, None)
        ax.bar(x + (k - 1) * 0.27, np.nan_to_num(values), 0.27, yerr=err, capsize=3, label=key, color=colour)
    ax.set_xticks(x, LABELS)
    ax.set_ylim(0, 1.05)
    ax.set_title(f"{title} (95% Wilson intervals)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _reliability(path: Path, bins: list[dict[str, float]], ece: float, title: str) -> None:
    fig, ax = plt.subplots(figsize=(5, 5))
    centres = [(b["lo"] + b["hi"]) / 2 for b in bins]
    acc = [0 if math.isnan(b["accuracy"]) else b["accuracy"] for b in bins]
    ax.bar(centres, acc, width=1 / len(bins), edgecolor="black", alpha=0.7, label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    ax.set_xlabel("confidence (top class probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title}\nECE (15 bins) = {ece:.3f}")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _curves(path: Path, history: dict[str, list[float]]) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    for ax, key in ((axes[0], "loss"), (axes[1], "accuracy")):
        for prefix, style in (("", "-"), ("val_", "--")):
            if f"{prefix}{key}" in history:
                ax.plot(epochs, history[f"{prefix}{key}"], style, label=f"{prefix or 'train_'}{key}")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_plots(
    out: Path,
    metrics: dict[str, Any],
    probs: np.ndarray,
    labels: np.ndarray,
    twins: np.ndarray | None,
    history: dict[str, list[float]] | None,
) -> list[Path]:
    """Write every plot of the report; returns the files written."""
    written = []
    for key, subset in (("raw", "raw test folder"), ("deduplicated", "de-duplicated test subset")):
        m = metrics.get(key)
        if not m or not m["n"]:
            continue
        title = f"{subset} (n={m['n']})"
        files = (out / f"confusion_{key}.png", out / f"per_class_{key}.png", out / f"reliability_{key}.png")
        _confusion(files[0], np.array(m["confusion_matrix"]), title)
        _per_class(files[1], m, title)
        _reliability(files[2], metrics[f"reliability_{key}"], m["ece_15"], title)
        written += list(files)
    if history and history.get("loss"):
        _curves(out / "training_curves.png", history)
        written.append(out / "training_curves.png")
    return written
