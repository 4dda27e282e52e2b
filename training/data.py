"""Reading an image-folder dataset, finding exact and near duplicates, and splitting without leaks.

The folder holds one sub-folder per class (names or aliases from :mod:`service.labels`). Every image is decoded
with the service's own :func:`service.imaging.preprocessing.model_pixels` and resized with its ``to_model_input``,
so training sees exactly what the service will see.

Duplicates: two images are the same when their decoded pixels are identical (exact) or when the correlation of
their standardised 32x32 grayscale thumbnails is at least ``near_threshold`` (the same image re-encoded, resized
or slightly re-windowed). Duplicates are grouped with union-find; each group keeps one representative, groups
whose members disagree on the label are dropped and reported, and the split is made over representatives, so no
copy of an image can sit on both sides of it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split
from tqdm import tqdm

from service.errors import ServiceError
from service.imaging.pixels import as_rgb
from service.imaging.preprocessing import PreprocessConfig, model_pixels, thumbnail, to_model_input
from service.labels import CLASSES, NUM_CLASSES, UnknownLabelError, canonical_label

log = logging.getLogger(__name__)

NEAR_THRESHOLD = 0.97
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".dcm", ".dicom"}


class DatasetError(ValueError):
    """The dataset folder cannot be used as given (unknown class folder, empty class, no images)."""


@dataclass
class Sample:
    """One image file with its class index."""

    path: Path
    label: int
    rel: str  # "<class folder>/<file name>", stable across machines

    @property
    def class_name(self) -> str:
        return CLASSES[self.label]


@dataclass
class LoadedImages:
    """Decoded images of one folder: model inputs, thumbnails and pixel hashes, aligned with ``samples``."""

    samples: list[Sample]
    images: np.ndarray  # uint8 (N, S, S, 3)
    thumbs: np.ndarray  # float32 (N, 1024), unit norm
    pixel_hashes: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (rel path, reason)

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=np.int64)


def _not_an_image_reason(path: Path) -> str:
    """Why a file is not listed: files are chosen by extension, so a DICOM export without ``.dcm`` is named as
    such in the report (its preamble says DICM) rather than passed over."""
    try:
        with path.open("rb") as f:
            is_dicom = f.read(132)[128:] == b"DICM"
    except OSError:
        is_dicom = False
    if is_dicom:
        return f"DICOM file without a .dcm extension ({path.suffix or 'no suffix'}): rename it to *.dcm"
    return f"not an image file ({path.suffix or 'no suffix'})"


def scan_folder(root: str | Path, require_all_classes: bool = True) -> tuple[list[Sample], list[tuple[str, str]]]:
    """List the images of a one-folder-per-class dataset.

    Returns the samples (sorted, so the order is reproducible) and the skipped files with their reason.
    An unknown class folder, a missing or empty class (when ``require_all_classes``) or no images at all raise
    :class:`DatasetError`.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    samples: list[Sample] = []
    skipped: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for folder in folders:
        try:
            label = canonical_label(folder.name)
        except UnknownLabelError as exc:
            raise DatasetError(f"{root}: {exc}") from None
        if label in seen:
            raise DatasetError(f"{root}: folders {seen[label]!r} and {folder.name!r} both mean class {label!r}")
        seen[label] = folder.name
        for path in sorted(folder.rglob("*")):
            if not path.is_file() or path.name.startswith("."):
                continue
            rel = path.relative_to(root).as_posix()
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                skipped.append((rel, _not_an_image_reason(path)))
                continue
            samples.append(Sample(path=path, label=CLASSES.index(label), rel=rel))
    if not samples:
        raise DatasetError(f"{root}: no images found (expected one sub-folder per class: {', '.join(CLASSES)})")
    counts = Counter(s.label for s in samples)
    missing = [CLASSES[i] for i in range(NUM_CLASSES) if counts[i] == 0]
    if missing and require_all_classes:
        raise DatasetError(f"{root}: no images for class(es) {', '.join(missing)}")
    return samples, skipped


def pixel_hash(rgb: np.ndarray) -> str:
    """Hash of the decoded pixels (exact duplicates have the same hash whatever their file encoding)."""
    return hashlib.sha256(np.ascontiguousarray(rgb).tobytes() + str(rgb.shape).encode()).hexdigest()


def load_images(
    samples: Sequence[Sample],
    config: PreprocessConfig,
    skipped: Iterable[tuple[str, str]] = (),
    progress: bool = True,
    desc: str = "decoding",
) -> LoadedImages:
    """Decode every sample; undecodable files are skipped and counted, never dropped silently."""
    kept: list[Sample] = []
    images: list[np.ndarray] = []
    thumbs: list[np.ndarray] = []
    hashes: list[str] = []
    skipped_list = list(skipped)
    for sample in tqdm(samples, desc=desc, unit="img", disable=not progress, leave=False):
        try:
            rgb = as_rgb(model_pixels(sample.path.read_bytes(), config))
        except (ServiceError, OSError) as exc:
            reason = exc.reason if isinstance(exc, ServiceError) else "unreadable file"
            skipped_list.append((sample.rel, reason))
            continue
        kept.append(sample)
        hashes.append(pixel_hash(rgb))
        thumbs.append(thumbnail(rgb))
        images.append(to_model_input(rgb, config))
    if not kept:
        raise DatasetError("no image could be decoded")
    for rel, reason in skipped_list:
        log.warning("skipped %s: %s", rel, reason)
    size = config.image_size
    return LoadedImages(
        samples=kept,
        images=np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8),
        thumbs=np.stack(thumbs).astype(np.float32),
        pixel_hashes=hashes,
        skipped=skipped_list,
    )


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def near_pairs(
    thumbs_a: np.ndarray,
    thumbs_b: np.ndarray | None = None,
    threshold: float = NEAR_THRESHOLD,
    block: int = 1024,
) -> list[tuple[int, int]]:
    """Index pairs whose thumbnail correlation is at least ``threshold`` (within ``a``, or between a and b)."""
    same = thumbs_b is None
    other = thumbs_a if thumbs_b is None else thumbs_b
    pairs: list[tuple[int, int]] = []
    for start in range(0, len(thumbs_a), block):
        sims = thumbs_a[start : start + block] @ other.T
        rows, cols = np.nonzero(sims >= threshold)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            i = start + r
            if not same or c > i:
                pairs.append((i, c))
    return pairs


def duplicate_groups(pixel_hashes: Sequence[str], thumbs: np.ndarray, threshold: float = NEAR_THRESHOLD) -> np.ndarray:
    """Group id (the smallest member index) for every image; exact and near copies share a group."""
    uf = _UnionFind(len(pixel_hashes))
    first: dict[str, int] = {}
    for i, h in enumerate(pixel_hashes):
        if h in first:
            uf.union(first[h], i)
        else:
            first[h] = i
    for i, j in near_pairs(thumbs, threshold=threshold):
        uf.union(i, j)
    return np.array([uf.find(i) for i in range(len(pixel_hashes))], dtype=np.int64)


@dataclass
class DedupResult:
    """What de-duplication kept and why; ``report()`` is what goes into metadata and the logs."""

    keep: np.ndarray  # indices of representatives kept for training/validation
    groups: np.ndarray  # group id per image
    exact_copies: int
    near_copies: int
    conflicts: list[dict[str, Any]]

    def report(self, samples: Sequence[Sample]) -> dict[str, Any]:
        sizes = Counter(self.groups.tolist())
        return {
            "images": len(samples),
            "distinct_groups": len(sizes),
            "groups_with_copies": sum(1 for n in sizes.values() if n > 1),
            "exact_copies_removed": self.exact_copies,
            "near_copies_removed": self.near_copies,
            "cross_label_groups": len(self.conflicts),
            "cross_label_images_dropped": sum(len(c["members"]) for c in self.conflicts),
            "kept": len(self.keep),
            "kept_per_class": {
                CLASSES[k]: int(v) for k, v in sorted(Counter(samples[i].label for i in self.keep.tolist()).items())
            },
            "cross_label_examples": self.conflicts[:50],
        }


def deduplicate(data: LoadedImages, threshold: float = NEAR_THRESHOLD) -> DedupResult:
    """Group duplicates, keep one image per group, drop groups whose labels disagree."""
    groups = duplicate_groups(data.pixel_hashes, data.thumbs, threshold)
    members: dict[int, list[int]] = {}
    for i, g in enumerate(groups.tolist()):
        members.setdefault(g, []).append(i)
    keep: list[int] = []
    conflicts: list[dict[str, Any]] = []
    exact = near = 0
    for idx in members.values():
        labels = {data.samples[i].label for i in idx}
        if len(labels) > 1:
            conflicts.append(
                {"members": [{"file": data.samples[i].rel, "label": data.samples[i].class_name} for i in idx]}
            )
            continue
        keep.append(idx[0])
        rep_hash = data.pixel_hashes[idx[0]]
        for i in idx[1:]:
            if data.pixel_hashes[i] == rep_hash:
                exact += 1
            else:
                near += 1
    return DedupResult(np.array(sorted(keep), dtype=np.int64), groups, exact, near, conflicts)


def stratified_split(
    indices: np.ndarray, labels: np.ndarray, val_fraction: float = 0.2, seed: int = 42
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of ``indices`` (one per duplicate group) into train and validation."""
    train_idx, val_idx = train_test_split(indices, test_size=val_fraction, random_state=seed, stratify=labels[indices])
    return np.sort(train_idx), np.sort(val_idx)


def find_twins(test: LoadedImages, train: LoadedImages, threshold: float = NEAR_THRESHOLD) -> list[bool]:
    """For each test image: does it have an exact or near copy anywhere in the training folder?"""
    train_hashes = set(train.pixel_hashes)
    twins = [h in train_hashes for h in test.pixel_hashes]
    for i, _ in near_pairs(test.thumbs, train.thumbs, threshold=threshold):
        twins[i] = True
    return twins


def class_weights(labels: np.ndarray, num_classes: int = NUM_CLASSES) -> dict[int, float]:
    """``n / (k * n_c)`` for each class present (balanced weighting)."""
    counts = np.bincount(labels, minlength=num_classes)
    n = int(counts.sum())
    return {c: float(n / (num_classes * counts[c])) for c in range(num_classes) if counts[c] > 0}


def fingerprint(samples: Sequence[Sample]) -> str:
    """SHA-256 over the sorted list of (relative path, file size): identifies the data a model saw."""
    digest = hashlib.sha256()
    for s in sorted(samples, key=lambda s: s.rel):
        digest.update(f"{s.rel}\t{s.path.stat().st_size}\n".encode())
    return digest.hexdigest()


DATA_REPORT_FILE = "training_data.json"


def without_file_names(info: dict[str, Any]) -> dict[str, Any]:
    """``info`` as it may travel inside the model (metadata.json, images, model.tar.gz): counts and hashes only.

    File names (skipped files, cross-label groups, test twins) can name patients; they stay in the training
    report (:func:`write_data_report`), written outside the model's version folder.
    """
    out = {k: v for k, v in info.items() if k not in ("skipped_files", "deduplication", "test_twins")}
    skipped = info.get("skipped_files", [])
    out["skipped_files"] = {
        "count": len(skipped),
        "reasons": dict(sorted(Counter(str(s["reason"]) for s in skipped).items())),
    }
    if "deduplication" in info:
        out["deduplication"] = {k: v for k, v in info["deduplication"].items() if k != "cross_label_examples"}
    if "test_twins" in info:
        out["test_twins"] = {k: v for k, v in info["test_twins"].items() if k != "files"}
    return out


def write_data_report(report_dir: Path, info: dict[str, Any]) -> Path:
    """The full data report, file names included, in the training report folder (never in the model)."""
    report_dir.mkdir(parents=True, exist_ok=True)
    path = report_dir / DATA_REPORT_FILE
    path.write_text(json.dumps(info, indent=1))
    return path
