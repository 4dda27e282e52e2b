"""Calibrate the warning of a model's answers (``service/ood.py``) and measure how well it works.

Two jobs, two kinds of evidence:

* **Not an MRI** (colour, bright background, low top probability): in-distribution are brain MRI slices of
  the model's validation split, re-created exactly as training made it (``training.data``: same
  de-duplication threshold, validation fraction and seed, read from the model's metadata; or the ``val`` list
  of the run's ``split.json`` with ``--split-file``) and, with ``--external-dev``, the slices of another
  collection (they are MRI slices too, from other scanners); out-of-distribution are the photos that
  scikit-image ships in its wheel (no download), crops and grayscale versions of them, and generated
  documents. For each statistic it prints the AUROC (MRI vs non-MRI) and the false-accept rate at 95 %
  true-accept, and picks the three thresholds jointly: the lowest false-accept rate whose true-accept rate on
  the MRI slices is at least ``--target-tar``.
* **Likely wrong / unlike the training images** (the model's own ``ood_score`` output, ``training.ood_score``):
  its threshold is the lowest that keeps at most ``--max-warned`` of the *correct* answers warned (by any
  check) on the validation split and on ``--external-dev``. It then reports the three warning figures on each
  labelled set: the error-detection AUROC of the answer's score (wrong answers should score higher), the share
  of correct answers warned and the share of wrong answers warned, with 95 % intervals (bootstrap for the
  AUROC, Wilson for the shares). ``--test-folder`` adds the same figures on a test folder's images with no
  near twin in the training folder (``--twin-threshold``); that set is reported, never used to choose.

With ``--write`` the thresholds and figures go into the model's ``metadata.json`` (key ``"ood"``), where the
service reads them.

    nice -n 10 .venv/bin/python benchmarks/ood_calibration.py --model-dir models/mri-classifier \\
        --data ../shared/data/brain-tumor-mri --external-dev ../shared/data/external-dev \\
        [--test-folder ../shared/data/brain-tumor-mri/Testing] [--write]

The non-MRI thresholds are chosen on the same non-MRI images the false-accept rate is measured on (there are
few), so that figure is optimistic; the share of correct answers warned on external-dev is measured on the set
its threshold was chosen on (the kept-aside half of that collection is the honest check).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service import ood
from service.classifier import load_model
from service.config import Settings
from service.preprocessing import PreprocessConfig, to_model_input
from service.versions import find_version_dir

#: scikit-image's sample images stored in its wheel (``skimage/data``): no network access needed.
SKIMAGE_IMAGES = {
    "astronaut": "colour photo",
    "chelsea": "colour photo",
    "coffee": "colour photo",
    "rocket": "colour photo",
    "hubble_deep_field": "colour photo",
    "immunohistochemistry": "colour micrograph",
    "retina": "colour photo",
    "colorwheel": "colour graphic",
    "logo": "colour graphic",
    "camera": "grayscale photo",
    "moon": "grayscale photo",
    "coins": "grayscale photo",
    "clock": "grayscale photo",
    "brick": "grayscale texture",
    "grass": "grayscale texture",
    "gravel": "grayscale texture",
    "cell": "grayscale micrograph",
    "microaneurysms": "grayscale micrograph",
    "horse": "binary silhouette",
    "checkerboard": "grayscale graphic",
    "page": "document",
    "text": "document",
}
WORDS = [
    "patient",
    "report",
    "results",
    "normal",
    "findings",
    "history",
    "clinical",
    "examination",
    "the",
    "of",
    "and",
    "with",
    "no",
    "evidence",
    "imaging",
    "follow-up",
    "recommended",
    "date",
    "signature",
    "table",
    "figure",
    "summary",
    "section",
    "method",
    "analysis",
    "data",
]


@dataclass
class Collection:
    """Model inputs [N, S, S, 3] with a group name per image."""

    images: list[np.ndarray]
    groups: list[str]
    labels: list[int] | None = None  # class indices, for labelled MRI sets

    def add(self, rgb: np.ndarray, group: str, config: PreprocessConfig) -> None:
        self.images.append(to_model_input(rgb, config))
        self.groups.append(group)


def _rgb(image: np.ndarray) -> np.ndarray:
    """Any scikit-image sample (bool, float, uint8; gray, RGB or RGBA) -> uint8 RGB."""
    x = np.asarray(image)
    if x.dtype == bool:
        x = x.astype(np.uint8) * 255
    elif x.dtype != np.uint8:
        x = np.clip(255 * (x - x.min()) / max(float(x.max() - x.min()), 1e-9), 0, 255).astype(np.uint8)
    if x.ndim == 2:
        x = np.repeat(x[:, :, None], 3, axis=2)
    return x[:, :, :3]


def _crops(rgb: np.ndarray, rng: np.random.Generator, count: int) -> Iterator[np.ndarray]:
    height, width = rgb.shape[:2]
    for _ in range(count):
        fraction = rng.uniform(0.5, 0.8)
        h, w = max(16, int(height * fraction)), max(16, int(width * fraction))
        y, x = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        yield rgb[y : y + h, x : x + w]


def _document(rng: np.random.Generator, dark: bool) -> np.ndarray:
    """A page of text lines (and sometimes a table): dark on paper, or light on a dark background."""
    width, height = int(rng.integers(500, 800)), int(rng.integers(600, 1000))
    paper = (18, 18, 22) if dark else tuple(int(v) for v in rng.integers(235, 256, 3))
    ink = (225, 225, 225) if dark else (int(rng.integers(0, 60)),) * 3
    page = Image.new("RGB", (width, height), paper)
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=int(rng.integers(12, 22)))
    y = int(rng.integers(30, 70))
    while y < height - 50:
        words = " ".join(rng.choice(WORDS, size=int(rng.integers(3, 12))))
        draw.text((int(rng.integers(30, 60)), y), words, fill=ink, font=font)
        y += int(rng.integers(18, 34))
        if rng.random() < 0.05:
            top = y
            for row in range(int(rng.integers(3, 7))):
                draw.line((40, top + row * 22, width - 40, top + row * 22), fill=ink, width=1)
            y = top + 7 * 22
    return np.asarray(page)


def non_mri_images(config: PreprocessConfig, seed: int = 0, documents: int = 40) -> Collection:
    """The out-of-distribution set: scikit-image's bundled photos (full, crops, grayscale) and documents."""
    from skimage import data

    rng = np.random.default_rng(seed)
    out = Collection([], [])
    for name, group in SKIMAGE_IMAGES.items():
        rgb = _rgb(getattr(data, name)())
        out.add(rgb, group, config)
        for crop in _crops(rgb, rng, 2):
            out.add(crop, group, config)
        if group.startswith("colour"):
            gray = np.repeat(rgb.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
            out.add(gray, f"{group} made grayscale", config)
    faces = data.lfw_subset()  # 200 grayscale faces, 25 x 25, float in [0, 1]
    for face in faces[rng.choice(len(faces), 40, replace=False)]:
        out.add(_rgb(face), "grayscale face", config)
    left, _, _ = data.stereo_motorcycle()
    out.add(_rgb(left), "colour photo", config)
    for i in range(documents):
        out.add(_document(rng, dark=i % 4 == 3), "document (dark)" if i % 4 == 3 else "document", config)
    return out


def mri_images(
    data_root: Path, split: str, metadata: dict[str, Any], config: PreprocessConfig, split_file: Path | None
) -> Collection:
    """The in-distribution set with labels: the validation split (re-created as training made it) or the test
    folder."""
    from training import data as ds

    if split == "test":
        return labelled_folder(data_root / "Testing", "MRI (test)", config)
    samples, skipped = ds.scan_folder(data_root / "Training")
    if split_file is not None:
        wanted = set(json.loads(split_file.read_text())["val"])
        samples = [s for s in samples if s.rel in wanted]
        loaded = ds.load_images(samples, config, skipped, progress=False, desc="validation")
        return Collection(list(loaded.images), ["MRI (validation)"] * len(loaded.samples), loaded.labels.tolist())
    training = metadata.get("training", {})
    loaded = ds.load_images(samples, config, skipped, progress=False, desc="training folder")
    dedup = ds.deduplicate(loaded, float(training.get("near_threshold", ds.NEAR_THRESHOLD)))
    _, val_idx = ds.stratified_split(
        dedup.keep, loaded.labels, float(training.get("val_fraction", 0.2)), int(training.get("seed", 42))
    )
    return Collection(
        [loaded.images[i] for i in val_idx], ["MRI (validation)"] * len(val_idx), loaded.labels[val_idx].tolist()
    )


def labelled_folder(
    folder: Path,
    group: str,
    config: PreprocessConfig,
    without_twins_in: Path | None = None,
    twin_threshold: float = 0.95,
) -> Collection:
    """A one-folder-per-class set with labels; with ``without_twins_in``, only its images with no exact or near
    copy in that folder."""
    from training import data as ds

    samples, skipped = ds.scan_folder(folder, require_all_classes=False)
    loaded = ds.load_images(samples, config, skipped, progress=False, desc=group)
    keep = np.arange(len(loaded.samples))
    if without_twins_in is not None:
        train_samples, train_skipped = ds.scan_folder(without_twins_in)
        train = ds.load_images(train_samples, config, train_skipped, progress=False, desc="training folder")
        keep = np.flatnonzero(~np.array(ds.find_twins(loaded, train, twin_threshold)))
    return Collection([loaded.images[i] for i in keep], [group] * len(keep), loaded.labels[keep].tolist())


def auroc(negatives: np.ndarray, positives: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties counting half (Mann-Whitney)."""
    scores = np.concatenate([negatives, positives])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    n_neg, n_pos = len(negatives), len(positives)
    return float((ranks[n_neg:].sum() - n_pos * (n_pos + 1) / 2) / (n_neg * n_pos))


def far_at_tar(negatives: np.ndarray, positives: np.ndarray, tar: float) -> tuple[float, float]:
    """(threshold, false-accept rate): accept scores <= the ``tar`` quantile of the in-distribution scores."""
    threshold = float(np.quantile(negatives, tar, method="higher"))
    return threshold, float(np.mean(positives <= threshold))


def choose(
    mri_sets: list[dict[str, np.ndarray]], other: dict[str, np.ndarray], target_tar: float, floors: ood.Thresholds
) -> tuple[ood.Thresholds, float, float]:
    """The thresholds with the lowest false-accept rate among those keeping ``target_tar`` of the slices of
    *every* MRI set (returns the thresholds, the lowest true-accept rate of a set and the false-accept rate)."""
    mri = {k: np.concatenate([s[k] for s in mri_sets]) for k in ("colour_spread", "border_brightness", "confidence")}
    upper = (0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999, 1.0)
    lower = (0.0, 0.001, 0.005, 0.01, 0.02, 0.03, 0.05)
    colour = sorted({max(float(np.quantile(mri["colour_spread"], q)), floors.max_colour_spread) for q in upper})
    border = sorted({max(float(np.quantile(s["border_brightness"], q)), 1e-3) for q in upper for s in mri_sets})
    confidence = sorted({float(np.quantile(mri["confidence"], q)) for q in lower})
    best: tuple[float, float, ood.Thresholds] | None = None

    def accepted(s: dict[str, np.ndarray], c: float, b: float, m: float) -> np.ndarray:
        return (s["colour_spread"] <= c) & (s["border_brightness"] <= b) & (s["confidence"] >= m)

    for c, b, m in itertools.product(colour, border, confidence):
        tar = min(float(accepted(s, c, b, m).mean()) for s in mri_sets)
        far = float(accepted(other, c, b, m).mean())
        if tar >= target_tar and (best is None or (far, -tar) < (best[0], -best[1])):
            best = (far, tar, ood.Thresholds(round(c, 4), round(b, 4), round(m, 4), source="metadata"))
    if best is None:
        raise SystemExit(f"no thresholds keep {target_tar:.0%} of the MRI slices")
    return best[2], best[1], best[0]


def infer(model: Any, images: list[np.ndarray], batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities [N, C], ood_score [N], NaN when the model has none) through the service's own model path."""
    rows = np.concatenate([model.infer(np.stack(images[i : i + batch])) for i in range(0, len(images), batch)])
    return np.asarray(rows["probabilities"]), np.asarray(rows["ood_score"], dtype=np.float64)


@dataclass
class Answers:
    """A labelled MRI set's answers: statistics of each image and whether the answer was right."""

    name: str
    stats: dict[str, np.ndarray]
    correct: np.ndarray


def answers(name: str, model: Any, collection: Collection) -> Answers:
    probs, ood_scores = infer(model, collection.images)
    stats = ood.scores(np.stack(collection.images), probs, ood_scores)
    return Answers(name, stats, probs.argmax(axis=1) == np.asarray(collection.labels))


def warned(a: Answers, thresholds: ood.Thresholds) -> np.ndarray:
    return ood.combined_score(a.stats, thresholds) > 1


def choose_ood_threshold(sets: list[Answers], thresholds: ood.Thresholds, max_warned: float) -> float | None:
    """The lowest ``ood_score`` threshold keeping at most ``max_warned`` of each set's correct answers warned."""
    if not sets or any(np.isnan(a.stats["ood_score"]).all() for a in sets):
        return None
    candidates = np.unique(np.concatenate([a.stats["ood_score"][a.correct] for a in sets]))
    for limit in candidates:
        trial = replace(thresholds, max_ood_score=float(limit))
        if all(warned(a, trial)[a.correct].mean() <= max_warned for a in sets):
            return float(limit)
    return float(candidates[-1])


def warning_figures(a: Answers, thresholds: ood.Thresholds) -> dict[str, Any]:
    """The three warning figures of one labelled set (``training.metrics.warning_metrics``) and the AUROC of
    each model statistic alone."""
    from training.metrics import warning_metrics

    out = warning_metrics(ood.combined_score(a.stats, thresholds), a.correct)
    if "error_auroc" in out:
        parts = {"1 - max softmax probability": 1.0 - a.stats["confidence"], "ood_score": a.stats.get("ood_score")}
        errors = ~a.correct
        out["part_auroc"] = {
            k: auroc(v[a.correct], v[errors]) for k, v in parts.items() if v is not None and np.isfinite(v).all()
        }
    return {k: _rounded(v) for k, v in out.items()}


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def write_metadata(version_dir: Path, section: dict[str, Any]) -> Path:
    """Store ``section`` as ``metadata.json["ood"]`` (written to a temporary file, then renamed)."""
    path = version_dir / "metadata.json"
    metadata = json.loads(path.read_text())
    metadata[ood.METADATA_KEY] = section
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(metadata, indent=2, sort_keys=True))
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="versioned model folder or one version")
    parser.add_argument("--version", type=int, default=None)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/brain-tumor-mri"))
    parser.add_argument("--split", choices=("val", "test"), default="val")
    parser.add_argument("--split-file", type=Path, default=None, help="the run's split.json (skips re-creating it)")
    parser.add_argument("--external-dev", type=Path, default=None, help="labelled slices of another collection")
    parser.add_argument("--test-folder", type=Path, default=None, help="report on its images with no training twin")
    parser.add_argument("--twin-threshold", type=float, default=0.95, help="thumbnail correlation of a near twin")
    parser.add_argument("--limit", type=int, default=0, help="at most this many MRI slices (0 = all)")
    parser.add_argument("--runtime", default="tensorflow", choices=("tensorflow", "openvino", "onnxruntime"))
    parser.add_argument("--target-tar", type=float, default=0.98, help="MRI slices of each set not flagged, at least")
    parser.add_argument("--max-warned", type=float, default=0.08, help="share of correct answers warned, at most")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    parser.add_argument("--write", action="store_true", help="store the thresholds in the model's metadata.json")
    args = parser.parse_args(argv)

    settings = Settings(
        _env_file=None,
        model_dir=args.model_dir,
        model_version=args.version,
        runtime=args.runtime,
        warmup=False,
        inference_streams=1,  # one caller: every thread on each batch
    )  # type: ignore[call-arg]
    version_dir = find_version_dir(args.model_dir, args.version)
    model = load_model(settings)
    config = model.preprocess
    print(
        f"model {model.info.name} version {model.info.version} ({version_dir}), {config.image_size} px, "
        f"{model.info.runtime} on {model.info.device}"
    )

    mri = mri_images(args.data, args.split, model.metadata, config, args.split_file)
    if args.limit and len(mri.images) > args.limit:
        keep = np.sort(np.random.default_rng(0).choice(len(mri.images), args.limit, replace=False))
        labels = mri.labels or []
        mri = Collection([mri.images[i] for i in keep], [mri.groups[i] for i in keep], [labels[i] for i in keep])
    labelled = {args.split if args.split == "test" else "validation": mri}
    if args.external_dev is not None:
        labelled["external-dev"] = labelled_folder(args.external_dev, "MRI (external-dev)", config)
    other = non_mri_images(config)
    in_dist = Collection([], [])
    for collection in labelled.values():
        in_dist.images.extend(collection.images)
        in_dist.groups.extend(collection.groups)
    print(f"{len(in_dist.images)} MRI slices ({', '.join(labelled)}), {len(other.images)} non-MRI images")

    sets = {name: answers(name, model, collection) for name, collection in labelled.items()}
    stats = {
        "mri": {k: np.concatenate([a.stats[k] for a in sets.values()]) for k in next(iter(sets.values())).stats},
        "other": ood.scores(np.stack(other.images), *infer(model, other.images)),
    }
    image_thresholds, tar, far = choose(
        [a.stats for a in sets.values()], stats["other"], args.target_tar, ood.Thresholds(max_colour_spread=0.02)
    )
    limit = choose_ood_threshold(list(sets.values()), image_thresholds, args.max_warned)
    thresholds = replace(image_thresholds, max_ood_score=None if limit is None else round(limit, 4))
    oriented: dict[str, Callable[[dict[str, np.ndarray]], np.ndarray]] = {
        "colour_spread": lambda s: s["colour_spread"],
        "border_brightness": lambda s: s["border_brightness"],
        "1 - max softmax probability": lambda s: 1.0 - s["confidence"],
    }
    if limit is not None:
        oriented["ood_score"] = lambda s: s["ood_score"]
    oriented["image checks and confidence (chosen thresholds)"] = lambda s: ood.combined_score(s, image_thresholds)
    oriented["all checks (chosen thresholds)"] = lambda s: ood.combined_score(s, thresholds)

    figures: dict[str, dict[str, float]] = {}
    print(f"\n| non-MRI detection: score | AUROC | FAR at {args.target_tar:.0%} TAR |\n|---|---:|---:|")
    for label, fn in oriented.items():
        neg, pos = fn(stats["mri"]), fn(stats["other"])
        _, far_q = far_at_tar(neg, pos, args.target_tar)
        figures[label] = {"auroc": round(auroc(neg, pos), 4), "far_at_tar": round(far_q, 4)}
        print(f"| {label} | {figures[label]['auroc']:.3f} | {far_q:.3f} |")
    combined_other = ood.combined_score(stats["other"], thresholds)
    mri_unflagged = min(float((ood.combined_score(a.stats, thresholds) <= 1).mean()) for a in sets.values())
    print(f"\nchosen thresholds: {thresholds.to_dict()}")
    print(
        f"image checks and confidence: true-accept (MRI not flagged, worst set) {tar:.3f}, false-accept {far:.3f}; "
        f"with ood_score (at most {args.max_warned:.0%} of correct answers warned): MRI not flagged (worst set) "
        f"{mri_unflagged:.3f}, false-accept {float((combined_other <= 1).mean()):.3f}"
    )
    print("\n| non-MRI group | images | flagged (all checks) |\n|---|---:|---:|")
    groups = np.array(other.groups)
    per_group = {}
    for group in sorted(set(other.groups)):
        mask = groups == group
        flagged = float((combined_other[mask] > 1).mean())
        per_group[group] = {"images": int(mask.sum()), "flagged": round(flagged, 3)}
        print(f"| {group} | {int(mask.sum())} | {flagged:.0%} |")

    if args.test_folder is not None:
        sets["test, no training twin"] = answers(
            "test, no training twin",
            model,
            labelled_folder(
                args.test_folder, "MRI (test, no twin)", config, args.data / "Training", args.twin_threshold
            ),
        )
    warnings: dict[str, Any] = {}
    print(
        "\n| set | images | wrong | error-detection AUROC (95% CI) | correct warned | wrong warned | "
        "AUROC 1-MSP | AUROC ood_score |\n|---|---:|---:|---|---:|---:|---:|---:|"
    )
    for name, a in sets.items():
        f = warnings[name] = warning_figures(a, thresholds)
        if "error_auroc" not in f:
            continue
        parts = f["part_auroc"]
        print(
            f"| {name} | {f['images']} | {f['wrong']} | {f['error_auroc']:.3f} "
            f"[{f['error_auroc_ci95'][0]:.3f}, {f['error_auroc_ci95'][1]:.3f}] | "
            f"{f['correct_warned']:.1%} | {f['wrong_warned']:.1%} | "
            f"{parts.get('1 - max softmax probability', np.nan):.3f} | {parts.get('ood_score', np.nan):.3f} |"
        )

    section = {
        **thresholds.to_dict(),
        "calibration": {
            "method": "grayscale + dark-background checks, maximum softmax probability and the model's ood_score "
            "(service/ood.py, training/ood_score.py)",
            "in_distribution": f"{len(in_dist.images)} MRI slices ({', '.join(labelled)})",
            "out_of_distribution": f"{len(other.images)} images: scikit-image samples, crops, generated documents",
            "target_true_accept": args.target_tar,
            "true_accept": round(tar, 4),
            "false_accept": round(far, 4),
            "true_accept_all_checks": round(mri_unflagged, 4),
            "false_accept_all_checks": round(float((combined_other <= 1).mean()), 4),
            "scores": figures,
            "per_group_flagged": per_group,
            "max_correct_warned": args.max_warned,
            "warnings": warnings,
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    }
    if args.json:
        args.json.write_text(json.dumps(section, indent=2))
    if args.write:
        print(f"\nwrote the thresholds to {write_metadata(version_dir, section)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
