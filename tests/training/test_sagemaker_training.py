"""The SageMaker training-container contract against a temporary /opt/ml root."""

from __future__ import annotations

import json
import shutil

import pytest

from training.cli import main
from training.sagemaker import hyperparameters_to_argv, tf_config_present


def _layout(root, dataset, hyperparameters):
    (root / "input" / "config").mkdir(parents=True)
    (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    shutil.copytree(dataset.train, root / "input" / "data" / "train")
    shutil.copytree(dataset.test, root / "input" / "data" / "test")


HP = {
    "epochs": "1",
    "freeze_epochs": "0",
    "mix_alphas": "1",
    "image_size": "32",
    "batch_size": "16",
    "backbone": "tiny",
    "weights": "none",
    "calibrate": "true",
    "sagemaker_region": '"eu-west-1"',
}


def test_hyperparameters_become_options():
    argv = hyperparameters_to_argv(
        {
            "epochs": "3",
            "crop_brain": "true",
            "calibrate": "false",
            "sagemaker_program": "x",
            "learning_rate": '"0.001"',
        }
    )
    assert argv == ["--epochs", "3", "--crop-brain", "--no-calibrate", "--learning-rate", "0.001"]


@pytest.mark.slow
def test_train_with_sagemaker_layout(tmp_path, monkeypatch, synthetic_dataset):
    root = tmp_path / "ml"
    _layout(root, synthetic_dataset, HP)
    monkeypatch.setenv("MRI_SM_ROOT", str(root))
    assert main(["train"]) == 0
    assert (root / "model" / "1" / "saved_model.pb").is_file()
    assert json.loads((root / "model" / "1" / "metadata.json").read_text())["architecture"]["backbone"] == "tiny"
    assert (root / "output" / "data" / "metrics.json").is_file()
    assert not (root / "output" / "failure").exists()


def test_bad_channel_writes_the_failure_file(tmp_path, monkeypatch, synthetic_dataset):
    root = tmp_path / "ml"
    _layout(root, synthetic_dataset, HP)
    (root / "input" / "data" / "train" / "lymphoma").mkdir()
    monkeypatch.setenv("MRI_SM_ROOT", str(root))
    assert main(["train"]) == 1
    reason = (root / "output" / "failure").read_text()
    assert "lymphoma" in reason and len(reason) <= 1024
    assert not (root / "model" / "1").exists()


def test_invalid_hyperparameter_writes_the_failure_file(tmp_path, monkeypatch, synthetic_dataset):
    root = tmp_path / "ml"
    _layout(root, synthetic_dataset, {**HP, "optimiser": "sgd"})
    monkeypatch.setenv("MRI_SM_ROOT", str(root))
    assert main(["train"]) == 1
    assert "invalid hyperparameters" in (root / "output" / "failure").read_text()


def test_missing_train_channel_writes_the_failure_file(tmp_path, monkeypatch):
    root = tmp_path / "ml"
    (root / "input" / "config").mkdir(parents=True)
    (root / "input" / "config" / "hyperparameters.json").write_text("{}")
    monkeypatch.setenv("MRI_SM_ROOT", str(root))
    assert main(["train"]) == 1
    assert "training channel" in (root / "output" / "failure").read_text()


def test_tf_config_selects_multi_worker(monkeypatch):
    monkeypatch.setenv(
        "TF_CONFIG",
        json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}),
    )
    assert tf_config_present()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1"]}, "task": {}}))
    assert not tf_config_present()
    monkeypatch.delenv("TF_CONFIG")
    assert not tf_config_present()


def test_a_dev_channel_becomes_the_dev_folder_and_stages_resume(tmp_path):
    from training.sagemaker import SageMakerEnv, run_training_job

    root = tmp_path / "ml"
    for channel in ("train", "dev"):
        (root / "input" / "data" / channel).mkdir(parents=True)
    seen: list[list[str]] = []
    assert run_training_job(SageMakerEnv(root=root), seen.append) == 0
    argv = seen[-1]
    assert argv[argv.index("--dev-dir") + 1] == str(root / "input" / "data" / "dev")
    assert "--test" not in argv and "--resume" not in argv
    (root / "checkpoints" / "stages").mkdir(parents=True)  # a spot interruption after some stages finished
    assert run_training_job(SageMakerEnv(root=root), seen.append) == 0
    assert "--resume" in seen[-1]
