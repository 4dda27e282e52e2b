"""``mri-classifier evaluate``: run an exported SavedModel over a test folder and write a report.

The report (``metrics.json``, ``predictions.csv`` and PNG plots) covers the raw test folder and its
de-duplicated subset: one image per group of exact or near copies inside the test folder (training's own
duplicate finder), leaving out every group with a copy in the training data. Which images have a copy
comes from ``--train-data`` when given (recomputed), otherwise from the pixel hashes of the twins the training
job stored in the model's metadata for this very test folder.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from service.inference.runtime import ModelLoadError
from service.inference.tta import TTA_MODES, outputs_with_tta
from service.inference.versions import find_version_dir, version_number
from service.labels import CLASSES

log = logging.getLogger("training.evaluate")


def saved_model_outputs(
    version_dir: Path, images: np.ndarray, batch_size: int = 32, progress: bool = True, tta: str = "none"
) -> dict[str, np.ndarray]:
    """Every output of the SavedModel's serving signature (``probabilities``, and ``ood_score`` for models that
    export it), batch by batch, with the service's TTA."""
    import tensorflow as tf
    from tqdm import tqdm

    from training.export import SERVING_SIGNATURE

    fn = tf.saved_model.load(str(version_dir)).signatures[SERVING_SIGNATURE]

    def outputs(batch: np.ndarray) -> dict[str, np.ndarray]:
        return {k: np.asarray(v.numpy()) for k, v in fn(images=tf.constant(batch, dtype=tf.float32)).items()}

    out: dict[str, list[np.ndarray]] = {}
    for start in tqdm(
        range(0, len(images), batch_size), desc="predicting", unit="batch", disable=not progress, leave=False
    ):
        for key, value in outputs_with_tta(outputs, images[start : start + batch_size], tta).items():
            out.setdefault(key, []).append(value)
    if not out:
        return {"probabilities": np.zeros((0, len(CLASSES)), np.float32)}
    return {key: np.concatenate(values) for key, values in out.items()}


def predict_saved_model(
    version_dir: Path, images: np.ndarray, batch_size: int = 32, progress: bool = True, tta: str = "none"
) -> np.ndarray:
    """Probabilities from the SavedModel's serving signature, batch by batch (with the service's TTA)."""
    return saved_model_outputs(version_dir, images, batch_size, progress, tta)["probabilities"]


def _fmt(x: float) -> str:
    return "  n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def summary_table(metrics: dict[str, Any]) -> str:
    """A short text table of the raw and de-duplicated results."""
    rows = [
        f"{'subset':<14}{'n':>5}{'acc':>8}{'bal.acc':>9}{'macroF1':>9}{'ECE':>7}  "
        + "  ".join(f"{c[:10]:>10}" for c in CLASSES)
    ]
    for key in ("raw", "deduplicated"):
        m = metrics.get(key)
        if not m or not m["n"]:
            continue
        sens = "  ".join(f"{_fmt(m['per_class'][c]['sensitivity']):>10}" for c in CLASSES)
        rows.append(
            f"{key:<14}{m['n']:>5}{_fmt(m['accuracy']):>8}{_fmt(m['balanced_accuracy']):>9}"
            f"{_fmt(m['macro_f1']):>9}{_fmt(m['ece_15']):>7}  {sens}"
        )
    return "\n".join(rows) + "\n(per-class columns: sensitivity)"


def _pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _ci(ci: list[float] | tuple[float, float]) -> str:
    lo, hi = ci
    return "" if math.isnan(lo) else f" ({100 * lo:.1f}–{100 * hi:.1f})"


def markdown_summary(metrics: dict[str, Any]) -> str:
    """The report as Markdown tables (what the model card quotes): overall, per class, confusion matrices."""
    subsets = [
        (k, t)
        for k, t in (("raw", "raw test folder"), ("deduplicated", "de-duplicated test subset"))
        if metrics.get(k) and metrics[k]["n"]
    ]
    lines = [
        "| metric | " + " | ".join(f"{t} (n={metrics[k]['n']})" for k, t in subsets) + " |",
        "|---|" + "---|" * len(subsets),
    ]
    lines.append(
        "| accuracy (95% CI) | "
        + " | ".join(_pct(metrics[k]["accuracy"]) + _ci(metrics[k]["accuracy_ci95"]) for k, _ in subsets)
        + " |"
    )
    for key, label in (("balanced_accuracy", "balanced accuracy"), ("macro_f1", "macro F1")):
        lines.append(f"| {label} | " + " | ".join(_pct(metrics[k][key]) for k, _ in subsets) + " |")
    for key, label in (("log_loss", "log-loss"), ("ece_15", "ECE (15 bins)")):
        lines.append(f"| {label} | " + " | ".join(f"{metrics[k][key]:.3f}" for k, _ in subsets) + " |")
    warnings = [metrics.get(f"warning_{k}", {}) for k, _ in subsets]
    auroc_ci = "{0[error_auroc]:.3f} ({0[error_auroc_ci95][0]:.3f}–{0[error_auroc_ci95][1]:.3f})"
    if all(
        "error_auroc" in w for w in warnings
    ):  # the answers' warning (service.checks.input_check): does it flag wrong answers?
        lines.append(
            "| warning: error-detection AUROC (95% CI) | " + " | ".join(auroc_ci.format(w) for w in warnings) + " |"
        )
        for key, label in (("correct_warned", "correct answers warned"), ("wrong_warned", "wrong answers warned")):
            lines.append(f"| {label} | " + " | ".join(_pct(w[key]) + _ci(w[f"{key}_ci95"]) for w in warnings) + " |")
    for k, title in subsets:
        m = metrics[k]
        lines += [
            "",
            f"**{title}** (n={m['n']}): per class, 95% Wilson intervals",
            "",
            "| class | n | sensitivity | specificity | precision | AUROC |",
            "|---|---|---|---|---|---|",
        ]
        for c in CLASSES:
            pc = m["per_class"][c]
            auroc = "n/a" if math.isnan(pc["auroc"]) else f"{pc['auroc']:.3f}"
            lines.append(
                f"| {c} | {pc['support']} | {_pct(pc['sensitivity'])}{_ci(pc['sensitivity_ci95'])} | "
                f"{_pct(pc['specificity'])}{_ci(pc['specificity_ci95'])} | "
                f"{_pct(pc['precision'])}{_ci(pc['precision_ci95'])} | {auroc} |"
            )
        lines += [
            "",
            f"Confusion matrix, {title} (rows true, columns predicted):",
            "",
            "| true \\ predicted | " + " | ".join(CLASSES) + " |",
            "|---|" + "---|" * len(CLASSES),
        ]
        for c, row in zip(CLASSES, m["confusion_matrix"], strict=True):
            lines.append(f"| {c} | " + " | ".join(str(v) for v in row) + " |")
    d = metrics.get("deduplication")
    if d:
        lines += [
            "",
            f"De-duplicated test subset: {d['kept']} of {d['images']} images. Removed: "
            f"{d['dropped_with_a_training_twin']} in groups with a copy in the training data, "
            f"{d['in_test_copies_collapsed']} copies inside the test folder (one image kept of each of "
            f"{d['in_test_duplicate_groups']} groups), {d['in_test_cross_label_images_dropped']} in groups whose "
            "copies disagree on the label.",
        ]
    if metrics.get("tta", "none") != "none":
        lines += ["", f"Test-time augmentation: {metrics['tta']} (probabilities averaged over the views)."]
    return "\n".join(lines) + "\n"


def evaluate(
    model: Path,
    data: Path,
    out: Path,
    train_data: Path | None = None,
    batch_size: int = 32,
    progress: bool = True,
    tta: str = "none",
) -> dict[str, Any]:
    """Evaluate and write the report; returns the metrics dictionary."""
    from service.checks import input_check
    from service.imaging.preprocessing import PreprocessConfig
    from training import data as ds
    from training.metrics import classification_metrics, reliability_bins, warning_metrics
    from training.plots import write_plots

    try:
        version_dir = find_version_dir(Path(model))
    except ModelLoadError as exc:
        raise FileNotFoundError(f"{model}: {exc}") from None
    metadata = json.loads((version_dir / "metadata.json").read_text())
    if metadata.get("classes") != list(CLASSES):
        raise ValueError(f"model classes {metadata.get('classes')} differ from {list(CLASSES)}")
    config = PreprocessConfig.from_dict(metadata["preprocessing"])
    samples, skipped = ds.scan_folder(data, require_all_classes=False)
    test = ds.load_images(samples, config, skipped, progress=progress, desc="test data")
    outputs = saved_model_outputs(version_dir, test.images, batch_size, progress, tta)
    probs, labels = outputs["probabilities"], test.labels
    # the warning every answer of the service carries, with the model's own thresholds
    checks = input_check.check(
        test.images,
        probs,
        input_check.Thresholds.from_metadata(metadata, input_check.Thresholds()),
        outputs.get("ood_score"),
    )
    warn_score = np.array([c.score for c in checks])
    correct = probs.argmax(axis=1) == labels

    threshold = _near_threshold(metadata)
    twin_source: str
    if train_data is not None:
        tr_samples, tr_skipped = ds.scan_folder(train_data, require_all_classes=False)
        train = ds.load_images(tr_samples, config, tr_skipped, progress=progress, desc="training data")
        twins = np.array(ds.find_twins(test, train, threshold))
        twin_source = f"recomputed against {train_data}"
    else:
        stored = metadata.get("data", {}).get("test_twins")
        if stored and "pixel_hashes" in stored and stored.get("folder_fingerprint") == ds.fingerprint(samples):
            listed = set(stored["pixel_hashes"])
            twins = np.array([h in listed for h in test.pixel_hashes])
            twin_source = "the model's metadata (same test folder fingerprint)"
        else:
            twins = None
            twin_source = "unknown: pass --train-data to report the de-duplicated subset"
    metrics: dict[str, Any] = {
        "model": {
            "name": metadata.get("model_name"),
            "version": version_number(version_dir, metadata),
            "path": str(version_dir),
        },
        "tta": tta,
        "test_folder": str(data),
        "skipped_files": [{"file": f, "reason": r} for f, r in test.skipped],
        "twin_source": twin_source,
        "raw": classification_metrics(probs, labels),
        "reliability_raw": reliability_bins(probs, labels),
        "warning_raw": warning_metrics(warn_score, correct),
    }
    in_subset: np.ndarray | None = None
    groups: np.ndarray | None = None
    if twins is not None:
        in_subset, groups, counts = deduplicated_subset(test, twins, threshold)
        metrics["deduplication"] = counts
        metrics["deduplicated"] = classification_metrics(probs[in_subset], labels[in_subset])
        metrics["deduplicated"]["note"] = (
            "one test image per group of exact or near copies inside the test folder, and none with a copy in the "
            "training data"
        )
        metrics["reliability_deduplicated"] = reliability_bins(probs[in_subset], labels[in_subset])
        metrics["warning_deduplicated"] = warning_metrics(warn_score[in_subset], correct[in_subset])
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_json_default))
    with (out / "predictions.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            [
                "file",
                "true_label",
                "predicted_label",
                *[f"p_{c}" for c in CLASSES],
                "correct",
                "has_training_twin",
                "duplicate_group",
                "in_deduplicated_subset",
                "warning",
                "reasons",
                "ood_score",
            ]
        )
        for i, s in enumerate(test.samples):
            pred = int(probs[i].argmax())
            writer.writerow(
                [
                    s.rel,
                    s.class_name,
                    CLASSES[pred],
                    *[f"{p:.6f}" for p in probs[i]],
                    int(pred == s.label),
                    "" if twins is None else int(twins[i]),
                    "" if groups is None else int(groups[i]),
                    "" if in_subset is None else int(in_subset[i]),
                    int(checks[i].warning),
                    " ".join(checks[i].reasons),
                    "" if checks[i].ood_score is None else f"{checks[i].ood_score:.6f}",
                ]
            )
    (out / "summary.md").write_text(markdown_summary(metrics))
    write_plots(out, metrics, probs, labels, twins, metadata.get("history"))
    sys.stdout.write(summary_table(metrics) + "\n")
    return metrics


def _near_threshold(metadata: dict[str, Any]) -> float:
    """The duplicate threshold the model's training data was de-duplicated with."""
    from training.data import NEAR_THRESHOLD

    split = metadata.get("data", {}).get("split_parameters") or {}
    value = split.get("near_threshold") or metadata.get("training", {}).get("near_threshold") or NEAR_THRESHOLD
    return float(value)


def deduplicated_subset(
    test: Any, twins: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """(mask of the de-duplicated test subset, duplicate group per image, what was removed and why).

    Test images are grouped with training's own duplicate finder (:func:`training.data.deduplicate`). A group
    whose members disagree on the label is dropped; so is a group with a member that has a copy in the training
    data; every other group keeps one image. The removal counts are disjoint and add up to ``images - kept``.
    """
    from training.data import deduplicate

    dedup = deduplicate(test, threshold)
    groups = dedup.groups
    tainted = {int(g) for g in groups[np.asarray(twins, dtype=bool)].tolist()}
    keep = np.zeros(len(groups), dtype=bool)
    for i in dedup.keep.tolist():  # one representative per group that agrees on the label
        keep[i] = int(groups[i]) not in tainted
    clean = {int(groups[i]) for i in dedup.keep.tolist()}
    sizes = np.bincount(groups, minlength=len(groups))
    return (
        keep,
        groups,
        {
            "images": len(groups),
            "with_training_twin": int(np.sum(twins)),
            "dropped_with_a_training_twin": int(sum(sizes[g] for g in clean & tainted)),
            "in_test_copies_collapsed": int(sum(sizes[g] - 1 for g in clean - tainted)),
            "in_test_duplicate_groups": sum(1 for g in clean - tainted if sizes[g] > 1),
            "in_test_cross_label_images_dropped": sum(len(c["members"]) for c in dedup.conflicts),
            "kept": int(keep.sum()),
        },
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value).__name__)


def run(argv: list[str]) -> int:
    """Entry point of ``mri-classifier evaluate``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(prog="mri-classifier evaluate", description=__doc__)
    p.add_argument("--model", required=True, type=Path, help="model base folder or one version folder")
    p.add_argument("--data", required=True, type=Path, help="test folder, one sub-folder per class")
    p.add_argument("--out", required=True, type=Path, help="report folder")
    p.add_argument("--train-data", type=Path, help="training folder, to find test images with a copy in it")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--tta", choices=TTA_MODES, default="none", help="test-time augmentation, as the service's MRI_TTA")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    args = p.parse_args(argv)
    evaluate(args.model, args.data, args.out, args.train_data, args.batch_size, args.progress, args.tta)
    return 0
