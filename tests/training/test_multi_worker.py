"""Multi-worker training for real: two ``mri-classifier train`` processes on loopback under
``MultiWorkerMirroredStrategy`` (CPU), once with a ``TF_CONFIG`` as a Kubeflow TFJob sets it and once in the
SageMaker layout of a two-instance job, from which the job builds its own ``TF_CONFIG``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.processes import free_port, serve_command
from training import cluster

# The recipe with the tiny backbone, one fine-tuning phase and no weight mix (the stages after fine-tuning run
# on the chief alone; tests/training/test_train_job.py covers them).
ARGS = ["--backbone", "tiny", "--weights", "none", "--image-size", "32", "--epochs", "2", "--freeze-epochs", "0"]
ARGS += ["--batch-size", "8", "--mix-alphas", "1", "--no-progress"]
HP = {
    "backbone": "tiny",
    "image_size": "32",
    "epochs": "2",
    "freeze_epochs": "0",
    "batch_size": "8",
    "weights": "none",
    "mix_alphas": "1",
}


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.synthetic import make_dataset

    return make_dataset(tmp_path_factory.mktemp("mw"), per_class=10, test_per_class=2, size=48).train


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MRI_", "SM_", "TF_CONFIG"))}
    tmp.mkdir(parents=True, exist_ok=True)
    env.update(TF_CPP_MIN_LOG_LEVEL="2", TMPDIR=str(tmp), CUDA_VISIBLE_DEVICES="", **extra)
    return env


def _run_workers(commands: list[tuple[list[str], dict[str, str]]], logs: Path, timeout: float = 150) -> list[float]:
    """Start every worker, wait for all; returns each one's wall time (asserting exit 0)."""
    started = time.monotonic()
    processes = []
    for index, (argv, env) in enumerate(commands):
        with (logs / f"worker{index}.log").open("wb") as log:
            processes.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env))
    seconds = []
    try:
        for index, process in enumerate(processes):
            code = process.wait(timeout=max(1.0, timeout - (time.monotonic() - started)))
            seconds.append(round(time.monotonic() - started, 1))
            assert code == 0, (logs / f"worker{index}.log").read_text()[-4000:]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)
    return seconds


def _weights(path: Path) -> dict[str, np.ndarray]:
    found: dict[str, np.ndarray] = {}

    def visit(name: str, item: object) -> None:
        if isinstance(item, h5py.Dataset):
            found[name] = item[()]

    with h5py.File(path, "r") as fh:
        fh.visititems(visit)
    return found


def _assert_same_weights(first: Path, second: Path) -> None:
    a, b = _weights(first), _weights(second)
    assert a and a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), f"{name} differs between the workers: gradients were not shared"


def _assert_one_export(chief_models: Path, worker_models: Path, worker_tmp: Path) -> None:
    assert sorted(p.name for p in chief_models.iterdir()) == ["1"], "exactly one version, no temporary folder"
    metadata = json.loads((chief_models / "1" / "metadata.json").read_text())
    assert metadata["strategy"] == "CollectiveAllReduceStrategy"  # MultiWorkerMirroredStrategy's class
    assert len(metadata["history"]["loss"]) == 2 and all(np.isfinite(metadata["history"]["loss"]))
    assert (chief_models / "1" / "saved_model.pb").is_file()
    assert not worker_models.exists() or not any(worker_models.iterdir()), "the non-chief worker exported"
    assert not any(worker_tmp.glob("mri-worker-export-*")), "the non-chief's scratch export was not removed"


def test_tf_config_for_hosts_and_the_chief() -> None:
    config = cluster.tf_config_for_hosts(["algo-1", "algo-2"], "algo-2")
    assert config == {"cluster": {"worker": ["algo-1:2222", "algo-2:2222"]}, "task": {"type": "worker", "index": 1}}
    assert cluster.is_chief(json.dumps({**config, "task": {"type": "worker", "index": 0}}))
    assert not cluster.is_chief(json.dumps(config))
    tfjob = {"cluster": {"chief": ["c:2222"], "worker": ["w0:2222"]}, "task": {"type": "worker", "index": 0}}
    assert not cluster.is_chief(json.dumps(tfjob)), "with a chief replica, worker 0 is not the chief"
    assert cluster.is_chief(json.dumps({**tfjob, "task": {"type": "chief", "index": 0}}))
    assert cluster.is_chief("")
    with pytest.raises(ValueError, match="not one of"):
        cluster.tf_config_for_hosts(["algo-1"], "algo-9")


def test_sagemaker_hosts_from_the_resource_config_or_the_toolkit_variables(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("SM_HOSTS", raising=False)
    assert cluster.sagemaker_hosts(tmp_path) is None
    monkeypatch.setenv("SM_HOSTS", '["algo-1", "algo-2"]')
    monkeypatch.setenv("SM_CURRENT_HOST", "algo-2")
    assert cluster.sagemaker_hosts(tmp_path) == (["algo-1", "algo-2"], "algo-2")
    (tmp_path / "input" / "config").mkdir(parents=True)
    resource = {"current_host": "algo-1", "hosts": ["algo-1", "algo-2", "algo-3"], "network_interface_name": "eth0"}
    (tmp_path / "input" / "config" / "resourceconfig.json").write_text(json.dumps(resource))
    assert cluster.sagemaker_hosts(tmp_path) == (["algo-1", "algo-2", "algo-3"], "algo-1"), "the platform's file wins"
    monkeypatch.setenv("TF_CONFIG", "")  # not set (empty), and restored to what it was after the test
    monkeypatch.setenv("MRI_CLUSTER_PORT", "7777")
    config = cluster.configure_sagemaker_cluster(tmp_path)
    assert config is not None and json.loads(os.environ["TF_CONFIG"]) == config
    assert config["cluster"]["worker"][2] == "algo-3:7777" and config["task"]["index"] == 0


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_workers_share_gradients_and_export_once(tmp_path, small_dataset) -> None:
    ports = [free_port(), free_port()]
    workers = [f"localhost:{port}" for port in ports]
    commands = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        argv = [*serve_command(), "train", "--data", str(small_dataset), *ARGS]
        argv += ["--model-dir", str(tmp_path / f"models{index}"), "--work-dir", str(tmp_path / f"work{index}")]
        commands.append((argv, _env(tmp_path / f"tmp{index}", TF_CONFIG=json.dumps(tf_config))))
    seconds = _run_workers(commands, tmp_path)
    print(f"two workers (TF_CONFIG): finished after {seconds} s")
    _assert_same_weights(tmp_path / "work0/phases/train.weights.h5", tmp_path / "work1/phases/train.weights.h5")
    _assert_one_export(tmp_path / "models0", tmp_path / "models1", tmp_path / "tmp1")


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_instance_sagemaker_job(tmp_path, small_dataset) -> None:
    # Two instances on one machine: their host names carry the port each listens on.
    hosts = [f"localhost:{free_port()}", f"localhost:{free_port()}"]
    commands = []
    for index, host in enumerate(hosts):
        root = tmp_path / f"algo-{index + 1}"
        (root / "input" / "config").mkdir(parents=True)
        (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(HP))
        resource = {"current_host": host, "hosts": hosts, "network_interface_name": "eth0"}
        (root / "input" / "config" / "resourceconfig.json").write_text(json.dumps(resource))
        shutil.copytree(small_dataset, root / "input" / "data" / "train")
        env = _env(root / "tmp", MRI_SM_ROOT=str(root), SM_HOSTS=json.dumps(hosts), SM_CURRENT_HOST=host)
        commands.append(([*serve_command(), "train"], env))
    seconds = _run_workers(commands, tmp_path)
    print(f"two-instance SageMaker job: finished after {seconds} s")
    first, second = tmp_path / "algo-1", tmp_path / "algo-2"
    _assert_same_weights(first / "checkpoints/phases/train.weights.h5", second / "checkpoints/phases/train.weights.h5")
    _assert_one_export(first / "model", second / "model", second / "tmp")
    assert not (first / "output" / "failure").exists() and not (second / "output" / "failure").exists()
