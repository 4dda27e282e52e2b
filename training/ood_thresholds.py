"""The warning thresholds of a model's answers (``checks/input_check.py``), chosen on labelled MRI slices and non-MRI
images, and the figures that say how well the warning works.

Two jobs, two kinds of evidence:

* **Not an MRI** (colour, bright background, low top probability): in-distribution are the labelled MRI sets
  (the validation split and, when given, a development folder from another source); out-of-distribution are
  the photos that scikit-image ships in its wheel (no download), crops and grayscale versions of them, and
  generated documents. The three thresholds are picked jointly: the lowest false-accept rate on the non-MRI
  images whose true-accept rate on *each* MRI set is at least ``target_tar``.
* **Likely wrong / unlike the training images** (the model's own ``ood_score`` output, ``training.ood_score``):
  its threshold is the lowest that keeps at most ``max_warned`` of the *correct* answers warned (by any check)
  on each labelled set. Each set then gets the three warning figures: the error-detection AUROC of the
  answer's score, the share of correct answers warned and the share of wrong answers warned.

The non-MRI thresholds are chosen on the same non-MRI images the false-accept rate is measured on (there are
few), so that figure is optimistic; the share of correct answers warned is measured on the sets its threshold
was chosen on. ``benchmarks/ood_calibration.py`` runs the same calibration on a published model and adds
figures on a test folder.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from service.checks import input_check
from service.imaging.preprocessing import PreprocessConfig, to_model_input
from service.inference.versions import METADATA_FILE
from training.stages import Progress

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
FLOORS = input_check.Thresholds(max_colour_spread=0.02)  # the colour check never gets stricter than this
METHOD = (
    "grayscale + dark-background checks, maximum softmax probability and the model's ood_score "
    "(service/checks/input_check.py, training/ood_score.py)"
)


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
    """P(score of a random positive > score of a random negative), ties counting half."""
    from sklearn.metrics import roc_auc_score

    truth = np.concatenate([np.zeros(len(negatives)), np.ones(len(positives))])
    return float(roc_auc_score(truth, np.concatenate([negatives, positives])))


def far_at_tar(negatives: np.ndarray, positives: np.ndarray, tar: float) -> tuple[float, float]:
    """(threshold, false-accept rate): accept scores <= the ``tar`` quantile of the in-distribution scores."""
    threshold = float(np.quantile(negatives, tar, method="higher"))
    return threshold, float(np.mean(positives <= threshold))


def choose(
    mri_sets: list[dict[str, np.ndarray]],
    other: dict[str, np.ndarray],
    target_tar: float,
    floors: input_check.Thresholds,
) -> tuple[input_check.Thresholds, float, float]:
    """The thresholds with the lowest false-accept rate among those keeping ``target_tar`` of the slices of
    *every* MRI set (returns the thresholds, the lowest true-accept rate of a set and the false-accept rate)."""
    mri = {k: np.concatenate([s[k] for s in mri_sets]) for k in ("colour_spread", "border_brightness", "confidence")}
    upper = (0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999, 1.0)
    lower = (0.0, 0.001, 0.005, 0.01, 0.02, 0.03, 0.05)
    colour = sorted({max(float(np.quantile(mri["colour_spread"], q)), floors.max_colour_spread) for q in upper})
    border = sorted({max(float(np.quantile(s["border_brightness"], q)), 1e-3) for q in upper for s in mri_sets})
    confidence = sorted({float(np.quantile(mri["confidence"], q)) for q in lower})
    best: tuple[float, float, input_check.Thresholds] | None = None

    def accepted(s: dict[str, np.ndarray], c: float, b: float, m: float) -> np.ndarray:
        return (s["colour_spread"] <= c) & (s["border_brightness"] <= b) & (s["confidence"] >= m)

    for c, b, m in itertools.product(colour, border, confidence):
        tar = min(float(accepted(s, c, b, m).mean()) for s in mri_sets)
        far = float(accepted(other, c, b, m).mean())
        if tar >= target_tar and (best is None or (far, -tar) < (best[0], -best[1])):
            best = (far, tar, input_check.Thresholds(round(c, 4), round(b, 4), round(m, 4), source="metadata"))
    if best is None:
        raise ValueError(f"no thresholds keep {target_tar:.0%} of the MRI slices")
    return best[2], best[1], best[0]


def infer(model: Any, images: list[np.ndarray], batch: int = 16, desc: str = "") -> tuple[np.ndarray, np.ndarray]:
    """(probabilities [N, C], ood_score [N], NaN when the model has none) through the service's own model path."""
    progress = Progress(f"warning thresholds: {desc}", len(images)) if desc else None
    rows = []
    for i in range(0, len(images), batch):
        rows.append(model.infer(np.stack(images[i : i + batch])))
        if progress is not None:
            progress.update(len(images[i : i + batch]))
    out = np.concatenate(rows)
    return np.asarray(out["probabilities"]), np.asarray(out["ood_score"], dtype=np.float64)


@dataclass
class Answers:
    """A labelled MRI set's answers: statistics of each image and whether the answer was right."""

    name: str
    stats: dict[str, np.ndarray]
    correct: np.ndarray


def answers(name: str, model: Any, collection: Collection) -> Answers:
    probs, ood_scores = infer(model, collection.images, desc=name)
    stats = input_check.scores(np.stack(collection.images), probs, ood_scores)
    return Answers(name, stats, probs.argmax(axis=1) == np.asarray(collection.labels))


def warned(a: Answers, thresholds: input_check.Thresholds) -> np.ndarray:
    return input_check.combined_score(a.stats, thresholds) > 1


def choose_ood_threshold(sets: list[Answers], thresholds: input_check.Thresholds, max_warned: float) -> float | None:
    """The lowest ``ood_score`` threshold keeping at most ``max_warned`` of each set's correct answers warned."""
    if not sets or any(np.isnan(a.stats["ood_score"]).all() for a in sets):
        return None
    candidates = np.unique(np.concatenate([a.stats["ood_score"][a.correct] for a in sets]))
    if not len(candidates):  # no correct answer anywhere: nothing to keep unwarned
        return None
    for limit in candidates:
        trial = replace(thresholds, max_ood_score=float(limit))
        if all(warned(a, trial)[a.correct].mean() <= max_warned for a in sets if a.correct.any()):
            return float(limit)
    return float(candidates[-1])


def warning_figures(a: Answers, thresholds: input_check.Thresholds) -> dict[str, Any]:
    """The three warning figures of one labelled set (``training.metrics.warning_metrics``) and the AUROC of
    each model statistic alone."""
    from training.metrics import warning_metrics

    out = warning_metrics(input_check.combined_score(a.stats, thresholds), a.correct)
    if "error_auroc" in out:
        parts = {"1 - max softmax probability": 1.0 - a.stats["confidence"], "ood_score": a.stats.get("ood_score")}
        errors = ~a.correct
        out["part_auroc"] = {
            k: auroc(v[a.correct], v[errors]) for k, v in parts.items() if v is not None and np.isfinite(v).all()
        }
    return rounded(out)


def rounded(value: Any) -> Any:
    """Floats rounded to 4 decimals, inside lists and dictionaries too."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, list):
        return [rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return value


@dataclass
class Calibration:
    """The chosen thresholds and the evidence for them."""

    thresholds: input_check.Thresholds
    sets: dict[str, Answers]  # the labelled MRI sets' answers
    other_groups: list[str]  # the non-MRI images' groups
    other_stats: dict[str, np.ndarray]
    true_accept: float  # image checks and confidence, worst MRI set
    false_accept: float
    scores: dict[str, dict[str, float]]  # AUROC and false-accept rate at target_tar of each statistic
    warnings: dict[str, dict[str, Any]]  # warning figures of each labelled set
    target_tar: float
    max_warned: float
    in_distribution: str

    @property
    def mri_unflagged(self) -> float:
        """The share of MRI slices no check flags (all checks, worst set)."""
        return min(float((~warned(a, self.thresholds)).mean()) for a in self.sets.values())

    @property
    def other_accepted(self) -> float:
        """The share of non-MRI images no check flags."""
        return float((input_check.combined_score(self.other_stats, self.thresholds) <= 1).mean())

    def per_group(self) -> dict[str, dict[str, Any]]:
        combined = input_check.combined_score(self.other_stats, self.thresholds)
        groups = np.array(self.other_groups)
        return {
            group: {
                "images": int((groups == group).sum()),
                "flagged": round(float((combined[groups == group] > 1).mean()), 3),
            }
            for group in sorted(set(self.other_groups))
        }

    def section(self) -> dict[str, Any]:
        """``metadata.json["ood"]``: the thresholds the service reads and how they were chosen."""
        return {
            **self.thresholds.to_dict(),
            "calibration": {
                "method": METHOD,
                "in_distribution": self.in_distribution,
                "out_of_distribution": f"{len(self.other_groups)} images: scikit-image samples, crops, generated "
                "documents",
                "target_true_accept": self.target_tar,
                "true_accept": round(self.true_accept, 4),
                "false_accept": round(self.false_accept, 4),
                "true_accept_all_checks": round(self.mri_unflagged, 4),
                "false_accept_all_checks": round(self.other_accepted, 4),
                "scores": self.scores,
                "per_group_flagged": self.per_group(),
                "max_correct_warned": self.max_warned,
                "warnings": self.warnings,
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
            },
        }


def calibrate(model: Any, labelled: dict[str, Collection], target_tar: float, max_warned: float) -> Calibration:
    """Choose the thresholds of ``model`` (a ``classifier.LoadedModel``) on the labelled MRI sets and the
    non-MRI images, and measure the warning on each labelled set."""
    other = non_mri_images(model.preprocess)
    sets = {name: answers(name, model, collection) for name, collection in labelled.items()}
    other_stats = input_check.scores(np.stack(other.images), *infer(model, other.images, desc="non-MRI images"))
    image_thresholds, tar, far = choose([a.stats for a in sets.values()], other_stats, target_tar, FLOORS)
    limit = choose_ood_threshold(list(sets.values()), image_thresholds, max_warned)
    thresholds = replace(image_thresholds, max_ood_score=None if limit is None else round(limit, 4))
    oriented: dict[str, Callable[[dict[str, np.ndarray]], np.ndarray]] = {
        "colour_spread": lambda s: s["colour_spread"],
        "border_brightness": lambda s: s["border_brightness"],
        "1 - max softmax probability": lambda s: 1.0 - s["confidence"],
    }
    if limit is not None:
        oriented["ood_score"] = lambda s: s["ood_score"]
    oriented["image checks and confidence (chosen thresholds)"] = lambda s: input_check.combined_score(
        s, image_thresholds
    )
    oriented["all checks (chosen thresholds)"] = lambda s: input_check.combined_score(s, thresholds)
    mri = {k: np.concatenate([a.stats[k] for a in sets.values()]) for k in next(iter(sets.values())).stats}
    scores = {}
    for label, fn in oriented.items():
        neg, pos = fn(mri), fn(other_stats)
        scores[label] = {
            "auroc": round(auroc(neg, pos), 4),
            "far_at_tar": round(far_at_tar(neg, pos, target_tar)[1], 4),
        }
    total = sum(len(c.images) for c in labelled.values())
    return Calibration(
        thresholds=thresholds,
        sets=sets,
        other_groups=other.groups,
        other_stats=other_stats,
        true_accept=tar,
        false_accept=far,
        scores=scores,
        warnings={name: warning_figures(a, thresholds) for name, a in sets.items()},
        target_tar=target_tar,
        max_warned=max_warned,
        in_distribution=f"{total} MRI slices ({', '.join(labelled)})",
    )


def write_metadata(version_dir: Path, section: dict[str, Any]) -> Path:
    """Store ``section`` as ``metadata.json["ood"]`` (written to a temporary file, then renamed)."""
    path = version_dir / METADATA_FILE
    metadata = json.loads(path.read_text())
    metadata[input_check.METADATA_KEY] = section
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(metadata, indent=2, sort_keys=True))
    os.replace(tmp, path)
    return path
