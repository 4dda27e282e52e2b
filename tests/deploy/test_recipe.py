"""One training recipe: ``docker/hyperparameters.json`` is the shipped model's recipe (as recorded in its
metadata), the train images' default under the job's own hyperparameters, and what compose and
``docs/evaluation/train_command.sh`` use."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import ROOT
from training.sagemaker import hyperparameters_to_argv
from training.train import config_from_args

RECIPE = ROOT / "docker" / "hyperparameters.json"
SHIPPED = ROOT / "models" / "mri-classifier"


def _as_recorded(config: Any) -> dict[str, Any]:
    """A TrainConfig as the export records it in metadata.json's ``training`` (paths and run flags left out)."""
    recorded = dataclasses.asdict(config)
    for key in ("data", "test", "model_dir", "work_dir", "report_dir", "resume", "progress"):
        recorded.pop(key, None)
    return json.loads(json.dumps(recorded))


def test_the_recipe_is_the_shipped_models() -> None:
    recipe = json.loads(RECIPE.read_text())
    assert all(isinstance(v, str) for v in recipe.values()), "SageMaker-style: every value a string"
    newest = max((p for p in SHIPPED.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    trained = json.loads((newest / "metadata.json").read_text())["training"]
    config = _as_recorded(config_from_args(["--data", "unused", *hyperparameters_to_argv(recipe)]))
    assert Path(config.pop("weights")).name == Path(trained.pop("weights")).name
    differing = {k: (config.get(k), v) for k, v in trained.items() if config.get(k) != v}
    assert not differing, f"recipe vs shipped model (recipe, shipped): {differing}"


def test_the_image_default_is_overridden_key_by_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The train image sets MRI_SM_DEFAULT_HYPERPARAMETERS to the recipe: a job's ``{"epochs": "1"}`` changes
    only the epochs; ``{}`` (SageMaker's, the Kubernetes component's default) trains the recipe."""
    from training.sagemaker import SageMakerEnv, run_training_job
    from training.train import config_from_args

    seen: list[Any] = []

    def record(options: list[str]) -> None:  # what would be trained, not a training run
        seen.append(config_from_args(options))

    root = tmp_path / "ml"
    (root / "input" / "data" / "train").mkdir(parents=True)
    (root / "input" / "config").mkdir(parents=True)
    for overrides in ({"epochs": "1"}, {}):
        (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(overrides))
        monkeypatch.setenv("MRI_SM_DEFAULT_HYPERPARAMETERS", str(RECIPE))
        assert run_training_job(SageMakerEnv(root=root), record) == 0
    with_override, default = seen
    assert with_override.epochs == 1 and default.epochs == 16
    assert with_override.backbone == default.backbone == "efficientnet_lite0"
    assert default.weights == "/opt/mri-classifier/weights/efficientnet_lite0_imagenet.weights.h5"
    monkeypatch.delenv("MRI_SM_DEFAULT_HYPERPARAMETERS")
    assert run_training_job(SageMakerEnv(root=root), record) == 0
    assert seen[-1].backbone != "efficientnet_lite0", "without the image's default, train's own defaults"


def test_compose_and_the_train_command_use_the_recipe() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["train"]["volumes"]
    assert any("./docker/hyperparameters.json}:/opt/ml/input/config/hyperparameters.json" in m for m in mounts)
    script = ROOT / "docs" / "evaluation" / "train_command.sh"
    assert 'json.load(open("docker/hyperparameters.json"))' in script.read_text()
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0


def test_the_weights_digest_is_pinned_once() -> None:
    """docker/lite0_state.py refuses weights other than the ported-and-verified ones."""
    text = (ROOT / "docker" / "lite0_state.py").read_text()
    assert 'EXPECTED_SHA256 = "005bdebd355e2b7f8f306bd4d3e0452d87921d44b3e5eb83430a6b076fca9a3e"' in text
