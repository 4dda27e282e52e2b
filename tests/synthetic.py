"""Synthetic MRI-like datasets for tests: one folder per class, class-specific patterns, planted duplicates."""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

FOLDERS = ("glioma_tumor", "meningioma_tumor", "no_tumor", "pituitary_tumor")  # the shared dataset's names


def mri_like(cls: int, rng: np.random.Generator, size: int = 96) -> np.ndarray:
    """A gray 'brain' ellipse on black with a class-specific bright structure (uint8 RGB)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    cy, cx = 0.5 + rng.uniform(-0.06, 0.06, 2)
    ry, rx = rng.uniform(0.34, 0.44), rng.uniform(0.28, 0.38)
    brain = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) < 1
    texture = sum(
        rng.uniform(10, 30) * np.sin(rng.uniform(4, 25) * (np.cos(a) * xx + np.sin(a) * yy) + rng.uniform(0, 6))
        for a in rng.uniform(0, np.pi, 3)
    )
    img = np.where(brain, 80 + texture + rng.normal(0, 8, (size, size)), 0)
    if cls == 0:  # glioma: large irregular blob in one hemisphere
        by, bx = cy - 0.12 + rng.uniform(-0.05, 0.05), cx - 0.15 + rng.uniform(-0.05, 0.05)
        img += 140 * (((yy - by) / 0.13) ** 2 + ((xx - bx) / 0.10) ** 2 < 1)
    elif cls == 1:  # meningioma: bright crescent at the edge
        ring = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
        img += 150 * ((ring > 0.75) & (ring < 1) & (yy < cy))
    elif cls == 3:  # pituitary: small bright spot low in the middle
        img += 170 * (((yy - (cy + 0.22)) / 0.06) ** 2 + ((xx - cx) / 0.06) ** 2 < 1)
    gray = np.clip(img, 0, 255).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def jpeg_bytes(rgb: np.ndarray, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@dataclass
class SyntheticDataset:
    """Paths of a generated train/test pair and the duplicates planted in it."""

    train: Path
    test: Path
    exact_copies: list[tuple[str, str]] = field(default_factory=list)
    near_copies: list[tuple[str, str]] = field(default_factory=list)
    cross_label: list[tuple[str, str]] = field(default_factory=list)
    test_twins: list[str] = field(default_factory=list)


def make_dataset(
    root: Path, per_class: int = 24, test_per_class: int = 6, size: int = 96, seed: int = 0
) -> SyntheticDataset:
    """Write ``root/train`` and ``root/test`` with planted exact, near and cross-label duplicates."""
    rng = np.random.default_rng(seed)
    train, test = root / "train", root / "test"
    out = SyntheticDataset(train, test)
    for c, folder in enumerate(FOLDERS):
        (train / folder).mkdir(parents=True, exist_ok=True)
        (test / folder).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (train / folder / f"img_{i:03d}.jpg").write_bytes(jpeg_bytes(mri_like(c, rng, size)))
        for i in range(test_per_class):
            (test / folder / f"test_{i:03d}.jpg").write_bytes(jpeg_bytes(mri_like(c, rng, size)))
        # exact copy: same bytes under another name
        shutil.copy(train / folder / "img_000.jpg", train / folder / "copy_of_000.jpg")
        out.exact_copies.append((f"{folder}/img_000.jpg", f"{folder}/copy_of_000.jpg"))
        # near copy: decoded, resized and re-encoded at another quality, saved as PNG
        src = Image.open(train / folder / "img_001.jpg").convert("RGB").resize((size * 3 // 4, size * 3 // 4))
        src.save(train / folder / "resized_001.png")
        out.near_copies.append((f"{folder}/img_001.jpg", f"{folder}/resized_001.png"))
        # a test image that is a re-encoded training image
        (test / folder / "twin_002.jpg").write_bytes(
            jpeg_bytes(np.asarray(Image.open(train / folder / "img_002.jpg").convert("RGB")), quality=75)
        )
        out.test_twins.append(f"{folder}/twin_002.jpg")
    # cross-label copy: a glioma image also filed as meningioma
    shutil.copy(train / FOLDERS[0] / "img_003.jpg", train / FOLDERS[1] / "mislabelled_003.jpg")
    out.cross_label.append((f"{FOLDERS[0]}/img_003.jpg", f"{FOLDERS[1]}/mislabelled_003.jpg"))
    return out
