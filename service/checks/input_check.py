"""The non-MRI / unsure / unfamiliar warning: four simple, well-known checks on each classified image.

* **Grayscale check** (``colour_spread``): MRI slices are gray, so the mean over pixels of
  ``(max(R, G, B) - min(R, G, B)) / 255`` is ~0 for them and clearly above it for photos.
* **Background check** (``border_brightness``): a brain slice sits on a black background, so the mean gray
  level of the outer frame of the model input (a band ``BORDER_FRACTION`` wide) is low; documents, X-ray
  films and most grayscale photos have a bright border.
* **Maximum softmax probability** (``confidence``; Hendrycks & Gimpel, ICLR 2017): the model is unsure when its
  top probability is low.
* **Unlike the training images** (``ood_score``, computed inside the model: ``training.ood_score``, a
  k-nearest-neighbour distance on its penultimate embedding, Sun et al. 2022): a scan from another collection,
  sequence or plane sits far from every training image, and the answer is then more often wrong. Models
  exported without the output (or without its threshold) skip this check.

An image is flagged ``likely_mri = False`` when either image check fails, ``confident = False`` when the
top probability is under the threshold and ``familiar = False`` when ``ood_score`` is over its threshold;
``warning`` is any of them. ``score`` puts them on one scale, each statistic divided by its threshold (the
confidence as ``(1 - p) / (1 - threshold)``): for an image that passes as an MRI slice it is the larger of
the two model statistics, so it ranks answers by how likely they are wrong; for one that fails an image check
it is the largest of all. Either way ``score > 1`` exactly when ``warning`` is true;
benchmarks/ood_calibration.py measures its AUROC (non-MRI images, and wrong answers).

Thresholds come from the model's ``metadata.json`` (key ``"ood"``, written by the calibration script) or,
when it has none, from the settings' defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from service import metrics
from service.config import Settings

METADATA_KEY = "ood"
BORDER_FRACTION = 1 / 16
REASON_COLOUR = "colour_image"
REASON_BACKGROUND = "bright_background"
REASON_CONFIDENCE = "low_confidence"
REASON_UNFAMILIAR = "unlike_training"
MESSAGES = {
    REASON_COLOUR: "the image is in colour; MRI slices are grayscale",
    REASON_BACKGROUND: "the image has no dark background around the anatomy, unlike an MRI slice",
    REASON_CONFIDENCE: "the model is unsure (low top probability)",
    REASON_UNFAMILIAR: "the image is unlike the images this model was trained on, so its answer is less reliable",
}
for _reason in MESSAGES:  # every reason is exported from the start (0), so a rate is defined before the first
    metrics.WARNINGS.labels(reason=_reason)


@dataclass(frozen=True)
class Thresholds:
    """Where each check starts to warn."""

    max_colour_spread: float = 0.05
    max_border_brightness: float = 0.35
    min_confidence: float = 0.5
    source: str = "defaults"  # "defaults" | "metadata"
    max_ood_score: float | None = None  # None: no "unlike the training images" check (the model's metadata sets it)

    def to_dict(self) -> dict[str, float]:
        out = {
            "max_colour_spread": self.max_colour_spread,
            "max_border_brightness": self.max_border_brightness,
            "min_confidence": self.min_confidence,
        }
        return out if self.max_ood_score is None else {**out, "max_ood_score": self.max_ood_score}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], defaults: Thresholds) -> Thresholds:
        """The model's calibrated thresholds (``metadata["ood"]``), each falling back to ``defaults``."""
        section = metadata.get(METADATA_KEY)
        if not isinstance(section, Mapping):
            return defaults
        values: dict[str, float] = {}
        for key, default in defaults.to_dict().items():
            value = section.get(key, default)
            values[key] = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default
        limit = section.get("max_ood_score")
        return cls(**values, source="metadata", max_ood_score=float(limit) if isinstance(limit, int | float) else None)


def thresholds(metadata: Mapping[str, Any], settings: Settings) -> Thresholds:
    """The model's calibrated thresholds, else the settings' defaults."""
    defaults = Thresholds(
        max_colour_spread=settings.ood_max_colour_spread,
        max_border_brightness=settings.ood_max_border_brightness,
        min_confidence=settings.ood_min_confidence,
    )
    return Thresholds.from_metadata(metadata, defaults)


@dataclass(frozen=True)
class Check:
    """The outcome for one image."""

    colour_spread: float
    border_brightness: float
    confidence: float
    score: float
    reasons: tuple[str, ...]
    ood_score: float | None = None

    @property
    def likely_mri(self) -> bool:
        return REASON_COLOUR not in self.reasons and REASON_BACKGROUND not in self.reasons

    @property
    def confident(self) -> bool:
        return REASON_CONFIDENCE not in self.reasons

    @property
    def familiar(self) -> bool:
        return REASON_UNFAMILIAR not in self.reasons

    @property
    def warning(self) -> bool:
        return bool(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form shown in answers (``service.schemas.InputCheck``)."""
        return {
            "warning": self.warning,
            "likely_mri": self.likely_mri,
            "confident": self.confident,
            "familiar": self.familiar,
            "reasons": list(self.reasons),
            "message": "; ".join(MESSAGES[r] for r in self.reasons) or None,
            "score": round(self.score, 4),
            "colour_spread": round(self.colour_spread, 4),
            "border_brightness": round(self.border_brightness, 4),
            "ood_score": None if self.ood_score is None else round(self.ood_score, 4),
        }


def _is_grey(image: np.ndarray) -> bool:
    """Whether the three channels of one uint8 (S, S, 3) image are equal (MRI slices: their spread is 0)."""
    flat = image.reshape(-1)
    return np.array_equal(flat[0::3], flat[1::3]) and np.array_equal(flat[0::3], flat[2::3])


def colour_spread(images: np.ndarray) -> np.ndarray:
    """Mean ``(max - min)`` over the RGB channels, per image, in [0, 1] (0 for a gray image).

    Exact integer arithmetic on uint8 planes (a reduction over the 3-long channel axis is several times
    slower in NumPy); a grey image is recognised by comparing its planes, a fifth of the cost."""
    x = np.ascontiguousarray(images)
    out = np.zeros(len(x), dtype=np.float64)
    for i, image in enumerate(x):
        if _is_grey(image):
            continue
        r, g, b = image[..., 0], image[..., 1], image[..., 2]
        spread = np.maximum(np.maximum(r, g), b).astype(np.int32) - np.minimum(np.minimum(r, g), b)
        out[i] = spread.sum(dtype=np.int64) / (255.0 * spread.size)
    return out


def _frame_mask(side: int, fraction: float) -> np.ndarray:
    band = max(1, round(side * fraction))
    mask = np.zeros((side, side), dtype=bool)
    mask[:band], mask[-band:], mask[:, :band], mask[:, -band:] = True, True, True, True
    return mask


def border_brightness(images: np.ndarray, fraction: float = BORDER_FRACTION) -> np.ndarray:
    """Mean gray level (in [0, 1]) of the outer frame of each image, ``fraction`` of the side wide (an exact
    integer sum over the frame's pixels and channels: the top and bottom bands, then the sides between them)."""
    x = np.asarray(images)
    count, side = len(x), x.shape[1]
    band = max(1, round(side * fraction))
    if 2 * band >= side:  # the frame is the whole image
        frame = x[:, _frame_mask(side, fraction)]
        return frame.reshape(count, -1).sum(axis=1, dtype=np.int64) / (255.0 * frame[0].size)
    middle = x[:, band:-band]
    parts = (x[:, :band], x[:, -band:], middle[:, :, :band], middle[:, :, -band:])
    total = sum(part.reshape(count, -1).sum(axis=1, dtype=np.int64) for part in parts)
    values = sum(part[0].size for part in parts)
    return np.asarray(total) / (255.0 * values)


def image_scores(images: np.ndarray) -> dict[str, np.ndarray]:
    """The statistics of the images alone (uint8 [N, S, S, 3]): computed where they are decoded, off the
    event loop."""
    return {"colour_spread": colour_spread(images), "border_brightness": border_brightness(images)}


def scores(images: np.ndarray, probs: np.ndarray, ood_scores: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The raw statistics per image (images uint8 [N, S, S, 3], probabilities [N, C], the model's ``ood_score``
    [N] when it has one: NaN or ``None`` means none)."""
    return with_model_outputs(image_scores(images), probs, ood_scores)


def with_model_outputs(
    image_stats: Mapping[str, np.ndarray], probs: np.ndarray, ood_scores: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """``image_scores`` plus each image's top probability and the model's ``ood_score`` (when given)."""
    stats = {**image_stats, "confidence": np.asarray(probs, dtype=np.float64).max(axis=1)}
    if ood_scores is not None:
        stats["ood_score"] = np.asarray(ood_scores, dtype=np.float64)
    return stats


def combined_score(stats: Mapping[str, np.ndarray], thresholds: Thresholds) -> np.ndarray:
    """One number per image, above 1 exactly when some check fails. Below 1 it is the model's own part
    (unsure or unfamiliar), so among MRI slices it ranks answers by how likely they are wrong."""
    image = np.maximum(
        stats["colour_spread"] / max(thresholds.max_colour_spread, 1e-9),
        stats["border_brightness"] / max(thresholds.max_border_brightness, 1e-9),
    )
    model = (1.0 - stats["confidence"]) / max(1.0 - thresholds.min_confidence, 1e-9)
    if thresholds.max_ood_score is not None and "ood_score" in stats:
        unfamiliar = stats["ood_score"] / max(thresholds.max_ood_score, 1e-9)
        model = np.fmax(model, unfamiliar)  # fmax: a NaN score (no output) leaves the confidence part
    return np.where(image > 1, np.maximum(image, model), model)


def check(
    images: np.ndarray, probs: np.ndarray, thresholds: Thresholds, ood_scores: np.ndarray | None = None
) -> list[Check]:
    """Run the checks on model inputs (uint8 [N, S, S, 3]), their probabilities [N, C] and the model's
    ``ood_score`` [N] (optional; NaN = the model has none)."""
    return check_scores(scores(images, probs, ood_scores), thresholds)


def check_scores(stats: Mapping[str, np.ndarray], thresholds: Thresholds) -> list[Check]:
    """The checks from the statistics of ``scores`` (cheap: safe on the event loop)."""
    combined = combined_score(stats, thresholds)
    out = []
    for i in range(len(combined)):
        spread, border, conf = (float(stats[k][i]) for k in ("colour_spread", "border_brightness", "confidence"))
        raw = float(stats["ood_score"][i]) if "ood_score" in stats else float("nan")
        ood_score = None if np.isnan(raw) else raw
        limit = thresholds.max_ood_score
        failed = (
            (REASON_COLOUR, spread > thresholds.max_colour_spread),
            (REASON_BACKGROUND, border > thresholds.max_border_brightness),
            (REASON_CONFIDENCE, conf < thresholds.min_confidence),
            (REASON_UNFAMILIAR, ood_score is not None and limit is not None and ood_score > limit),
        )
        reasons = tuple(reason for reason, bad in failed if bad)
        out.append(Check(spread, border, conf, float(combined[i]), reasons, ood_score))
    return out
