"""Write a tiny SageMaker training layout for the image test: 4 class folders x 12 JPEGs, hyperparameters, and
one extra JPEG to send to the service. Needs numpy and Pillow (run it with the training image's Python).

    python3 smoke_data.py /opt/ml     ->  input/config/hyperparameters.json, input/data/train/<class>/*.jpg,
                                           sample.jpg
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("glioma", "meningioma", "no_tumor", "pituitary")
PER_CLASS = 12
SIZE = 48
#: Overrides of the recipe (training/recipe.json, train's defaults: Lite0 from the image's ImageNet weights, brain
#: crop, fine-tuning from block4a, probe and weight mix, warning thresholds): the same recipe, small enough for a
#: smoke run.
HYPERPARAMETERS = {
    "epochs": "2",
    "freeze_epochs": "1",
    "image_size": "64",
    "batch_size": "8",
}


def image(cls: int, rng: np.random.Generator) -> Image.Image:
    """A gray ellipse ('brain') with random texture and a class-specific bright structure: varied enough that
    the training job's near-duplicate filter (thumbnail correlation) keeps every image."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    cy, cx = 0.5 + rng.uniform(-0.08, 0.08, 2)
    ry, rx = rng.uniform(0.3, 0.45), rng.uniform(0.25, 0.4)
    brain = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
    texture = sum(
        rng.uniform(15, 40) * np.sin(rng.uniform(4, 25) * (np.cos(a) * xx + np.sin(a) * yy) + rng.uniform(0, 6))
        for a in rng.uniform(0, np.pi, 4)
    )
    img = np.where(brain, rng.uniform(60, 110) + texture, 0.0) + rng.normal(0, 12, (SIZE, SIZE))
    if cls != 2:  # no_tumor has no bright structure
        sy, sx = [(cy - 0.12, cx - 0.15), (cy - ry * 0.8, cx), (cy, cx), (cy + 0.22, cx)][cls]
        size = [0.12, 0.08, 0.0, 0.06][cls]
        img += 150 * (((yy - sy - rng.uniform(-0.04, 0.04)) ** 2 + (xx - sx - rng.uniform(-0.04, 0.04)) ** 2) < size**2)
    gray = np.clip(img, 0, 255).astype(np.uint8)
    return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2))


def main(root: Path) -> int:
    """Write the layout under ``root``."""
    rng = np.random.default_rng(7)
    config = root / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "hyperparameters.json").write_text(json.dumps(HYPERPARAMETERS))
    for cls, name in enumerate(CLASSES):
        folder = root / "input" / "data" / "train" / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(PER_CLASS):
            image(cls, rng).save(folder / f"{name}-{i:02d}.jpg", quality=90)
    image(0, rng).save(root / "sample.jpg", quality=90)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1])))
