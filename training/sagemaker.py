"""The SageMaker training-container contract.

Started as ``train`` with no options: hyperparameters come from ``<root>/input/config/hyperparameters.json``
(every value a string), data from the ``train`` channel under ``<root>/input/data/``, with an optional ``test``
channel (evaluated, never used to choose) and ``dev`` channel (a labelled folder from another source:
``--dev-dir``); the model goes to ``<root>/model`` (SageMaker tars it into model.tar.gz), the reports to
``<root>/output/data``, checkpoints and stage results to ``<root>/checkpoints`` (synced to S3 when checkpointing
is on, so a spot interruption resumes). On failure the reason goes to ``<root>/output/failure`` and the exit
status is 1. ``root`` is ``/opt/ml`` unless ``MRI_SM_ROOT`` says otherwise (tests use a temporary folder).
Every option's default is the shipped recipe (``training/recipe.json``): the job's hyperparameters override it
key by key, so an empty ``{}`` (or no file) trains the shipped recipe.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Callable
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

from training.cluster import configure_sagemaker_cluster

log = logging.getLogger("training.sagemaker")

TF_CONFIG_VAR = "TF_CONFIG"
# Hyperparameters that are not options of `train` (set by the SageMaker SDK or the platform itself).
IGNORED_HYPERPARAMETERS = {
    "sagemaker_program",
    "sagemaker_submit_directory",
    "sagemaker_region",
    "sagemaker_job_name",
    "sagemaker_container_log_level",
    "model_dir",
}
FAILURE_LIMIT = 1024


class SageMakerEnv(BaseSettings):
    """Where the SageMaker layout lives, and the environment TensorFlow's multi-worker setup reads."""

    model_config = SettingsConfigDict(env_prefix="MRI_SM_", extra="ignore")

    root: Path = Path("/opt/ml")

    @property
    def hyperparameters_file(self) -> Path:
        return self.root / "input" / "config" / "hyperparameters.json"

    def channel(self, name: str) -> Path:
        return self.root / "input" / "data" / name

    def is_training_job(self) -> bool:
        return self.hyperparameters_file.is_file() or self.channel("train").is_dir()


class _TFConfig(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    tf_config: str = ""


def tf_config_present() -> bool:
    """True when ``TF_CONFIG`` describes a multi-worker cluster (Kubeflow TFJob, SageMaker multi-worker)."""
    raw = _TFConfig().tf_config
    if not raw:
        return False
    try:
        cluster = json.loads(raw).get("cluster", {})
    except (ValueError, AttributeError):
        return False
    return sum(len(v) for v in cluster.values() if isinstance(v, list)) > 1


def hyperparameters_to_argv(hyperparameters: dict[str, object]) -> list[str]:
    """``{"epochs": "3", "crop_brain": "true"}`` -> ``["--epochs", "3", "--crop-brain"]``."""
    argv: list[str] = []
    for key, raw in hyperparameters.items():
        if key in IGNORED_HYPERPARAMETERS:
            continue
        flag = "--" + key.replace("_", "-")
        value = str(raw).strip().strip('"')
        if value.lower() in ("true", "false"):
            argv.append(flag if value.lower() == "true" else "--no-" + key.replace("_", "-"))
        else:
            argv += [flag, value]
    return argv


def run_training_job(env: SageMakerEnv, train_argv: Callable[[list[str]], object]) -> int:
    """Run ``train_argv`` (``train``'s options -> a trained model) under the SageMaker layout; write the failure
    file and return 1 on any error. ``train`` passes itself in, so this module never imports it."""
    try:
        hp = json.loads(env.hyperparameters_file.read_text()) if env.hyperparameters_file.is_file() else {}
        if not isinstance(hp, dict):
            raise ValueError("hyperparameters.json must hold a JSON object")
        train_channel = env.channel("train")
        if not train_channel.is_dir():
            raise FileNotFoundError(f"training channel {train_channel} is missing")
        argv = [
            "--data",
            str(train_channel),
            "--model-dir",
            str(env.root / "model"),
            "--work-dir",
            str(env.root / "checkpoints"),
            "--report-dir",
            str(env.root / "output" / "data"),
            "--no-progress",
        ]
        if env.channel("test").is_dir():
            argv += ["--test", str(env.channel("test"))]
        if env.channel("dev").is_dir():
            argv += ["--dev-dir", str(env.channel("dev"))]
        if any((env.root / "checkpoints" / sub).is_dir() for sub in ("backup", "phases", "stages")):
            argv.append("--resume")
        configure_sagemaker_cluster(env.root)  # a job with several instances: TF_CONFIG from its hosts
        try:
            train_argv(argv + hyperparameters_to_argv(hp))
        except SystemExit:  # argparse refused an option
            raise ValueError(f"invalid hyperparameters: {sorted(hp)}") from None
        return 0
    except Exception as exc:  # the job must leave a reason whatever went wrong
        log.error("training failed:\n%s", traceback.format_exc())
        failure = env.root / "output" / "failure"
        failure.parent.mkdir(parents=True, exist_ok=True)
        failure.write_text(f"{type(exc).__name__}: {exc}"[:FAILURE_LIMIT])
        return 1
