"""Which model folder the service serves: the configured one, or the model built into the image.

The serving images carry the shipped model at ``MRI_BUILTIN_MODEL_DIR``. It is served only when nothing else
was asked for: ``MRI_MODEL_DIR`` (or ``--model-dir``) was not set, and SageMaker's ``/opt/ml/model`` (the
default model folder) holds nothing, i.e. no ``model.tar.gz`` was unpacked and nothing was mounted there.
Anything placed there, or a model folder named explicitly, is the configured model: when it fails to load the
service stays not ready with the reason, and never falls back to the built-in model. The choice is made once,
at start, and ``/readyz`` reports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from service.config import Settings

Origin = Literal["configured", "built-in"]
#: Entries of a model folder that are not a model: hidden files and the ext4 root's lost+found of a fresh volume.
_NOT_A_MODEL = ("lost+found",)


@dataclass(frozen=True)
class ModelSource:
    """Where the served model comes from (shown on ``/readyz``)."""

    origin: Origin
    model_dir: Path


def holds_anything(folder: Path) -> bool:
    """True when ``folder`` has an entry other than hidden files and ``lost+found`` (an unreadable one counts)."""
    try:
        return any(not p.name.startswith(".") and p.name not in _NOT_A_MODEL for p in folder.iterdir())
    except FileNotFoundError:
        return False
    except OSError:
        return True  # there, but unreadable: a configured model that will fail loudly


def choose(settings: Settings) -> Settings:
    """``settings`` serving the built-in model when no model was configured, else ``settings`` unchanged."""
    builtin = settings.builtin_model_dir
    if builtin is None or "model_dir" in settings.model_fields_set or holds_anything(settings.model_dir):
        return settings
    return settings.model_copy(update={"model_dir": builtin})


def describe(settings: Settings) -> ModelSource:
    """The origin of the model folder ``settings`` serve."""
    builtin = settings.builtin_model_dir
    origin: Origin = "built-in" if builtin is not None and settings.model_dir == builtin else "configured"
    return ModelSource(origin, settings.model_dir)
