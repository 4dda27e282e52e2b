"""The shipped recipe: the default of every option of ``mri-classifier train``, in one file.

``training/recipe.json`` (package data, so an installed wheel and the train images carry it) holds the values
that made the shipped model. The command line, the SageMaker hyperparameters (which override it key by key,
under the same names), the train images, the Kubernetes TFJob and compose read nothing else: a job given no
options trains the shipped recipe.

``"weights": "imagenet"`` means, for EfficientNet-Lite0, the ImageNet weights ported by ``make lite0-weights``
(``scratch/weights/``, in the working directory or the source checkout) or carried by the train image
(``/opt/mri-classifier/weights/``); for EfficientNetB0, Keras's own download.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path
from typing import Any

RECIPE_FILE = "recipe.json"
LITE0_WEIGHTS_FILE = "efficientnet_lite0_imagenet.weights.h5"
CHECKOUT_WEIGHTS_DIR = Path("scratch") / "weights"  # where `make lite0-weights` writes
IMAGE_WEIGHTS_DIR = Path("/opt/mri-classifier/weights")  # where the train image keeps them


@functools.cache
def _load() -> str:
    return resources.files("training").joinpath(RECIPE_FILE).read_text()


def recipe() -> dict[str, Any]:
    """The recipe as typed JSON values (a fresh copy: callers may change it)."""
    values = json.loads(_load())
    if not isinstance(values, dict):
        raise ValueError(f"training/{RECIPE_FILE} must hold a JSON object")
    return values


def lite0_weights_candidates() -> list[Path]:
    """Where the EfficientNet-Lite0 ImageNet weights are looked for, in order."""
    checkout = Path(__file__).resolve().parents[1]
    return [
        CHECKOUT_WEIGHTS_DIR / LITE0_WEIGHTS_FILE,  # relative: recorded as such in the metadata
        checkout / CHECKOUT_WEIGHTS_DIR / LITE0_WEIGHTS_FILE,
        IMAGE_WEIGHTS_DIR / LITE0_WEIGHTS_FILE,
    ]


def resolve_weights(backbone: str, weights: str) -> str:
    """The weights a run starts from: ``imagenet`` becomes the Lite0 file found on disk (``FileNotFoundError``
    naming ``make lite0-weights`` when there is none); every other value is returned unchanged."""
    if weights != "imagenet":
        return weights
    if backbone == "tiny":
        raise ValueError("the tiny test backbone has no ImageNet weights: pass --weights none")
    if backbone != "efficientnet_lite0":
        return weights  # EfficientNetB0: Keras downloads them
    candidates = lite0_weights_candidates()
    for path in candidates:
        if path.is_file():
            return str(path)
    looked = ", ".join(str(p) for p in dict.fromkeys(candidates))
    raise FileNotFoundError(
        f"the EfficientNet-Lite0 ImageNet weights are missing (looked for {looked}): run `make lite0-weights` "
        "in the source checkout (the train image carries them), or pass --weights FILE, or --weights none to "
        "start from random weights"
    )
