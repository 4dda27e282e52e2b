"""The four classes: their canonical names, fixed order and folder-name aliases.

This is the one contract shared by training and serving. Training writes ``CLASSES`` into the model's
metadata and the service refuses a model whose classes differ, so labels can never be silently swapped.
"""

from __future__ import annotations

import re

CLASSES: tuple[str, ...] = ("glioma", "meningioma", "no_tumor", "pituitary")
NUM_CLASSES = len(CLASSES)

_ALIASES: dict[str, str] = {
    "glioma": "glioma",
    "glioma_tumor": "glioma",
    "glioma_tumour": "glioma",
    "meningioma": "meningioma",
    "meningioma_tumor": "meningioma",
    "meningioma_tumour": "meningioma",
    "no_tumor": "no_tumor",
    "no_tumour": "no_tumor",
    "notumor": "no_tumor",
    "notumour": "no_tumor",
    "no": "no_tumor",
    "normal": "no_tumor",
    "healthy": "no_tumor",
    "pituitary": "pituitary",
    "pituitary_tumor": "pituitary",
    "pituitary_tumour": "pituitary",
}


class ClassOrderError(ValueError):
    """A model, manifest or report whose classes are not ``CLASSES`` in this order."""


def check_class_order(classes: object) -> None:
    """The one check of a model's class list: exactly ``CLASSES``, in order (``ClassOrderError`` otherwise)."""
    if not isinstance(classes, list | tuple) or tuple(classes) != CLASSES:
        raise ClassOrderError(f"class order mismatch: model has {classes}, service expects {list(CLASSES)}")


class UnknownLabelError(ValueError):
    """A folder or label name that maps to none of the four classes."""


def _normalise(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def canonical_label(name: str) -> str:
    """Map a folder or label name (``glioma_tumor``, ``notumor``, ``No Tumour``...) to its canonical class."""
    key = _normalise(name)
    try:
        return _ALIASES[key]
    except KeyError:
        raise UnknownLabelError(f"unknown class name {name!r}; expected one of {', '.join(CLASSES)}") from None


def label_index(name: str) -> int:
    """Index of a class name (or alias) in ``CLASSES``."""
    return CLASSES.index(canonical_label(name))
