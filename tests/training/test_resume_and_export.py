"""Fault tolerance of the training job: a killed run resumes from its last checkpoint; exports are atomic."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from training.export import export_model
from training.model import build_model


def _train_cmd(dataset, out: Path, epochs: int, resume: bool) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "training.cli",
        "train",
        "--data",
        str(dataset.train),
        "--model-dir",
        str(out / "model"),
        "--work-dir",
        str(out / "work"),
        "--epochs",
        str(epochs),
        "--image-size",
        "32",
        "--batch-size",
        "2",
        "--backbone",
        "tiny",
        "--weights",
        "none",
        "--freeze-epochs",
        "0",
        "--mix-alphas",
        "1",
        "--early-stopping-patience",
        "50",
        "--no-progress",
    ]
    return [*cmd, "--resume"] if resume else cmd


@pytest.mark.slow
def test_killed_training_resumes_from_the_last_epoch(tmp_path, synthetic_dataset):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    epochs = 5
    proc = subprocess.Popen(
        _train_cmd(synthetic_dataset, tmp_path, epochs, False),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    meta = tmp_path / "work" / "backup" / "train" / "training_metadata.json"
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            if meta.is_file() and json.loads(meta.read_text() or "{}").get("epoch", 0) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "training finished before it could be interrupted"
        os.killpg(proc.pid, signal.SIGKILL)  # a crash or a spot interruption mid-epoch: no clean-up runs
    finally:
        proc.wait(timeout=30)
    checkpoint_epoch = json.loads(meta.read_text())["epoch"]
    assert 2 <= checkpoint_epoch < epochs
    assert not (tmp_path / "model" / "1").exists()

    done = subprocess.run(
        _train_cmd(synthetic_dataset, tmp_path, epochs, True),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    with (tmp_path / "work" / "history" / "train.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    # every epoch appears once: the resumed run started after the checkpointed epoch, not from zero
    assert [int(r["epoch"]) for r in rows] == list(range(epochs))
    assert f"Epoch {checkpoint_epoch + 1}/{epochs}" in done.stdout
    assert "Epoch 1/" not in done.stdout
    meta_out = json.loads((tmp_path / "model" / "1" / "metadata.json").read_text())
    assert len(meta_out["history"]["loss"]) == epochs


def test_failed_export_leaves_no_version_behind(tmp_path, monkeypatch):
    from keras.src.export.saved_model_export_archive import SavedModelExportArchive

    model = build_model(32, backbone="tiny")

    def broken_write_out(self, filepath, *args, **kwargs):
        Path(filepath, "saved_model.pb").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(SavedModelExportArchive, "write_out", broken_write_out)
    with pytest.raises(OSError, match="disk full"):
        export_model(model, tmp_path, {"classes": []})
    assert list(tmp_path.iterdir()) == []


def test_versions_increase_and_are_never_overwritten(tmp_path):
    model = build_model(32, backbone="tiny")
    first = export_model(model, tmp_path, {"classes": []})
    second = export_model(model, tmp_path, {"classes": []})
    assert (first.name, second.name) == ("1", "2")
    assert json.loads((second / "metadata.json").read_text())["version"] == 2
    with pytest.raises(FileExistsError):
        export_model(model, tmp_path, {"classes": []}, version=1)


@pytest.mark.parametrize("backbone", ["tiny", "efficientnet_lite0"])
def test_every_weight_is_stored_once(tmp_path, backbone):
    """keras-team/keras#23553: tracking the model in the ExportArchive would store each variable twice."""
    import numpy as np
    import tensorflow as tf

    model = build_model(32, backbone=backbone)
    version_dir = export_model(model, tmp_path, {"classes": []})
    reader = tf.train.load_checkpoint(str(version_dir / "variables" / "variables"))
    stored = sum(
        int(np.prod(shape))
        for name, shape in reader.get_variable_to_shape_map().items()
        if name != "_CHECKPOINTABLE_OBJECT_GRAPH"
    )
    assert stored == model.count_params()
    loaded = tf.saved_model.load(str(version_dir))
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    out = loaded.signatures["serving_default"](images=tf.constant(x))["probabilities"].numpy()
    np.testing.assert_allclose(out, model(x, training=False).numpy(), atol=1e-5)
