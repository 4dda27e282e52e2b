"""Which model folder the service serves: the configured one, or the model built into the image.

The serving images carry the shipped model at ``MRI_BUILTIN_MODEL_DIR``. It is served only when nothing else
was asked for: ``MRI_MODEL_DIR`` (or ``--model-dir``) was not set, and SageMaker's ``/opt/ml/model`` (the
default model folder) holds nothing, i.e. no ``model.tar.gz`` was unpacked and nothing was mounted there.
Anything placed there, or a model folder named explicitly, is the configured model: when it fails to load the
service stays not ready with the reason, and never falls back to the built-in model. The choice is made once,
at start, and ``/readyz`` reports it.

One exception is asked for by name: ``MRI_BUILTIN_MODEL_UNTIL_TRAINED`` makes ``MRI_MODEL_DIR`` a model store
that a training job fills later (KServe's ``/mnt/models``). While the store holds no SavedModel version the
built-in model is served, and the first version that appears replaces it (the hot reload watches the store).
A version already in the store at start is loaded as the configured model, with no fallback if it fails.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from service.config import Settings
from service.inference.runtime import ModelLoadError
from service.inference.versions import find_version_dir

log = logging.getLogger(__name__)

Origin = Literal["configured", "built-in"]
#: Entries of a model folder that are not a model: hidden files and the ext4 root's lost+found of a fresh volume.
_NOT_A_MODEL = ("lost+found",)


@dataclass(frozen=True)
class ModelSource:
    """Where the served model comes from (shown on ``/readyz``)."""

    origin: Origin
    model_dir: Path
    #: With MRI_BUILTIN_MODEL_UNTIL_TRAINED, while the built-in model serves: the store whose first version
    #: will replace it.
    waiting_for: Path | None = None


def holds_anything(folder: Path) -> bool:
    """True when ``folder`` has an entry other than hidden files and ``lost+found`` (an unreadable one counts)."""
    try:
        return any(not p.name.startswith(".") and p.name not in _NOT_A_MODEL for p in folder.iterdir())
    except FileNotFoundError:
        return False
    except OSError:
        return True  # there, but unreadable: a configured model that will fail loudly


def choose(settings: Settings) -> Settings:
    """``settings`` serving the built-in model when no model was configured, else ``settings`` unchanged (a model
    store served built-in until trained keeps its folder: ``until_trained`` picks the version to load)."""
    builtin = settings.builtin_model_dir
    if (
        builtin is None
        or settings.builtin_model_until_trained
        or "model_dir" in settings.model_fields_set
        or holds_anything(settings.model_dir)
    ):
        return settings
    return settings.model_copy(update={"model_dir": builtin})


def _store_is_empty(settings: Settings) -> bool:
    """Whether the configured model store holds no loadable version (the version asked for, or any)."""
    try:
        find_version_dir(settings.model_dir, settings.model_version)
    except ModelLoadError:
        return True
    return False


def until_trained(settings: Settings) -> Path | None:
    """The built-in model's version folder to load in place of the model store while the store holds no
    version (MRI_BUILTIN_MODEL_UNTIL_TRAINED); ``None`` otherwise (the store's version is loaded)."""
    builtin = settings.builtin_model_dir
    if not settings.builtin_model_until_trained or builtin is None or not _store_is_empty(settings):
        return None
    log.info("no model version in %s yet: serving the built-in model until one appears", settings.model_dir)
    return find_version_dir(builtin)


def describe(settings: Settings, served: Path | None = None) -> ModelSource:
    """The origin of the model ``settings`` serve; ``served`` is the version folder being served, if any."""
    builtin = settings.builtin_model_dir
    if builtin is None:
        return ModelSource("configured", settings.model_dir)
    if settings.model_dir == builtin:
        return ModelSource("built-in", builtin)
    if settings.builtin_model_until_trained:
        serves_builtin = served.is_relative_to(builtin) if served is not None else _store_is_empty(settings)
        if serves_builtin:
            return ModelSource("built-in", builtin, waiting_for=settings.model_dir)
    return ModelSource("configured", settings.model_dir)
