"""The WiSE-FT weight mix (Wortsman et al. 2022): every weight = (1 - alpha) * linear-probe model + alpha *
fine-tuned model, with alpha chosen from the recipe's grid by a rule fixed before any mix is measured.

Rules (``--mix-rule``):

* ``validation-floor-then-dev``: the mixes whose validation accuracy is not below the fine-tuned model's
  (alpha 1), then the one with the highest accuracy on the development folder (``--dev-dir``, another source);
  without a development folder, the highest validation accuracy.
* ``validation``: the highest validation accuracy, whatever else is given.

Ties go to the larger alpha (the one closer to the fine-tuned model).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

METHOD = "WiSE-FT (Wortsman et al. 2022): every weight = (1 - alpha) * linear-probe model + alpha * fine-tuned model"
RULES = {
    "validation-floor-then-dev": "validation accuracy not below the fine-tuned model's (alpha 1), then the highest "
    "accuracy on the development folder; ties to the larger alpha",
    "validation": "the highest validation accuracy; ties to the larger alpha",
}
WITHOUT_DEV = (
    "the highest validation accuracy (no development folder given: validation alone); ties to the larger alpha"
)
TOLERANCE = 1e-9


def check_alphas(alphas: Sequence[float]) -> tuple[float, ...]:
    """The grid, sorted and checked: values in [0, 1], alpha 1 (the fine-tuned model) among them."""
    grid = tuple(sorted({float(a) for a in alphas}))
    if not grid or any(not 0.0 <= a <= 1.0 for a in grid):
        raise ValueError("--mix-alphas: values between 0 and 1")
    if grid[-1] != 1.0:
        raise ValueError("--mix-alphas must include 1 (the fine-tuned model itself)")
    return grid


def mixed_weights(probe: Sequence[np.ndarray], tuned: Sequence[np.ndarray], alpha: float) -> list[np.ndarray]:
    """``(1 - alpha) * probe + alpha * tuned``, weight by weight (BatchNorm statistics included)."""
    if len(probe) != len(tuned):
        raise ValueError("the two models have different weights")
    out = []
    for p, t in zip(probe, tuned, strict=True):
        if p.shape != t.shape:
            raise ValueError(f"weight shapes differ: {p.shape} vs {t.shape}")
        out.append(((1.0 - alpha) * p + alpha * t).astype(t.dtype))
    return out


def choose_alpha(trials: dict[float, dict[str, Any]], rule: str, has_dev: bool) -> tuple[float, str]:
    """(alpha, how it was chosen) from ``{alpha: {"val_accuracy", ["dev_accuracy"]}}``."""
    if rule not in RULES:
        raise ValueError(f"--mix-rule must be one of {', '.join(RULES)}")
    if 1.0 not in trials:
        raise ValueError("the fine-tuned model (alpha 1) was not measured")
    if rule == "validation-floor-then-dev" and has_dev:
        floor = trials[1.0]["val_accuracy"]
        candidates = [a for a, t in trials.items() if t["val_accuracy"] >= floor - TOLERANCE]
        return max(candidates, key=lambda a: (trials[a]["dev_accuracy"], a)), RULES[rule]
    how = RULES["validation"] if rule == "validation" else WITHOUT_DEV
    return max(trials, key=lambda a: (trials[a]["val_accuracy"], a)), how
