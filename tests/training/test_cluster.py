"""The multi-worker patch of Keras's private internals (``training/cluster.py``) runs only on the Keras versions
it was tested with: the pinned one must be listed, and any other is refused with the versions it was written for,
before a private module is imported. That the patch works is shown by the two-worker runs of
test_multi_worker.py."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from training import cluster

ROOT = Path(__file__).resolve().parents[2]


def pinned_keras() -> dict[str, str]:
    """lock file -> the Keras version it pins (every lock that has Keras)."""
    found = {}
    for lock in sorted((ROOT / "requirements").glob("*.lock")):
        match = re.search(r"^keras==(\S+)", lock.read_text(), re.M)
        if match:
            found[lock.name] = match.group(1)
    return found


def test_the_pinned_keras_is_one_the_patch_was_tested_with() -> None:
    import keras

    pins = pinned_keras()
    assert {"train.lock", "serve.lock", "dev.lock"} <= set(pins), pins
    untested = {lock: version for lock, version in pins.items() if version not in cluster.TESTED_KERAS_VERSIONS}
    assert not untested, (
        f"Keras changed in {untested}: run tests/training/test_multi_worker.py (slow) with it, check the patched "
        "internals of training/cluster.py against its source, then add it to TESTED_KERAS_VERSIONS"
    )
    assert keras.__version__ in cluster.TESTED_KERAS_VERSIONS, "this environment was installed from the locks"


@pytest.fixture
def restored_trainer(monkeypatch: pytest.MonkeyPatch) -> object:
    """Keras's trainer module, its patched functions put back after the test."""
    from keras.src.backend.tensorflow import trainer

    monkeypatch.setattr(trainer, "reduce_per_replica", trainer.reduce_per_replica)
    monkeypatch.setattr(
        trainer.TensorFlowTrainer, "_maybe_symbolic_build", trainer.TensorFlowTrainer._maybe_symbolic_build
    )
    return trainer


@pytest.mark.parametrize("version", ["3.7.0", "3.15.2", "4.0.0"])
def test_an_untested_keras_is_refused_before_its_internals_are_touched(
    monkeypatch: pytest.MonkeyPatch, restored_trainer: object, version: str
) -> None:
    import keras

    before = restored_trainer.reduce_per_replica  # type: ignore[attr-defined]
    monkeypatch.setattr(keras, "__version__", version)
    monkeypatch.setitem(sys.modules, "keras.src", None)  # a Keras laid out otherwise: importing it would fail
    tested = ", ".join(cluster.TESTED_KERAS_VERSIONS)
    with pytest.raises(
        cluster.UnsupportedKerasError,
        match=rf"tested for Keras {re.escape(tested)} only; this is Keras {re.escape(version)}",
    ):
        cluster.patch_keras_multi_worker()
    assert restored_trainer.reduce_per_replica is before  # type: ignore[attr-defined]


def test_the_tested_keras_is_patched_once(restored_trainer: object) -> None:
    trainer = restored_trainer
    original = trainer.reduce_per_replica  # type: ignore[attr-defined]
    cluster.patch_keras_multi_worker()
    patched = trainer.reduce_per_replica  # type: ignore[attr-defined]
    assert patched is not original and getattr(patched, "_mri_patched", False)
    cluster.patch_keras_multi_worker()
    assert trainer.reduce_per_replica is patched, "idempotent"  # type: ignore[attr-defined]


def test_a_tested_keras_without_the_internals_is_refused(
    monkeypatch: pytest.MonkeyPatch, restored_trainer: object
) -> None:
    monkeypatch.delattr(restored_trainer, "_collective_all_reduce_multi_worker")
    with pytest.raises(cluster.UnsupportedKerasError, match="lacks the internals"):
        cluster.patch_keras_multi_worker()
