"""The training cluster: who the workers are, which one is the chief, and where each one exports.

TensorFlow's ``MultiWorkerMirroredStrategy`` reads ``TF_CONFIG``. A Kubeflow ``TFJob`` sets it itself (a
``chief`` and ``worker`` replicas); a SageMaker multi-instance training job does not, so it is built here from
the job's host list: ``/opt/ml/input/config/resourceconfig.json`` (``{"current_host": "algo-1", "hosts":
["algo-1", "algo-2"]}``, written by the platform), else ``SM_HOSTS`` / ``SM_CURRENT_HOST`` (set by AWS's training
toolkit). The first host is worker 0, the chief. Every host listens on ``MRI_CLUSTER_PORT`` (2222) unless its name
already carries a port (``host:port``, e.g. several workers on one machine).

Every worker must take part in saving (reading distributed variables can be a collective operation), but only
the chief's export is kept: the others write into a temporary folder that is removed (TensorFlow's documented
multi-worker saving pattern). The chief's export is atomic by itself (``training.export``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger("training.cluster")

TF_CONFIG = "TF_CONFIG"
#: The Keras versions ``patch_keras_multi_worker`` was written for and tested with (the two-worker runs of
#: tests/training/test_multi_worker.py). It replaces private functions, so any other version is refused; a test
#: fails when the pinned Keras (requirements/*.lock) is not listed here.
TESTED_KERAS_VERSIONS = ("3.15.1",)
RESOURCE_CONFIG = Path("input") / "config" / "resourceconfig.json"
DEFAULT_PORT = 2222


class ClusterEnv(BaseSettings):
    """The environment variables that describe a training cluster."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    tf_config: str = Field(default="", alias="TF_CONFIG")
    sm_hosts: str = Field(default="", alias="SM_HOSTS")
    sm_current_host: str = Field(default="", alias="SM_CURRENT_HOST")
    port: int = Field(default=DEFAULT_PORT, ge=1, le=65535, alias="MRI_CLUSTER_PORT")


def _address(host: str, port: int) -> str:
    return host if ":" in host else f"{host}:{port}"


def tf_config_for_hosts(hosts: list[str], current_host: str, port: int = DEFAULT_PORT) -> dict[str, Any]:
    """``TF_CONFIG`` for ``MultiWorkerMirroredStrategy``: one worker per host, the first one the chief."""
    if current_host not in hosts:
        raise ValueError(f"current host {current_host!r} is not one of the job's hosts {hosts}")
    return {
        "cluster": {"worker": [_address(host, port) for host in hosts]},
        "task": {"type": "worker", "index": hosts.index(current_host)},
    }


def sagemaker_hosts(root: Path, env: ClusterEnv | None = None) -> tuple[list[str], str] | None:
    """(hosts, current host) of a SageMaker training job: ``resourceconfig.json``, else ``SM_HOSTS`` /
    ``SM_CURRENT_HOST``; ``None`` when neither is there."""
    env = env or ClusterEnv()
    path = root / RESOURCE_CONFIG
    if path.is_file():
        config = json.loads(path.read_text())
        return [str(host) for host in config["hosts"]], str(config["current_host"])
    if env.sm_hosts and env.sm_current_host:
        return [str(host) for host in json.loads(env.sm_hosts)], env.sm_current_host
    return None


def configure_sagemaker_cluster(root: Path) -> dict[str, Any] | None:
    """Set ``TF_CONFIG`` from the SageMaker host list of a job with several instances (a ``TF_CONFIG`` that is
    already set wins). Returns the configuration set, or ``None`` for a one-instance job."""
    env = ClusterEnv()
    found = sagemaker_hosts(root, env)
    if env.tf_config or found is None or len(found[0]) < 2:
        return None
    config = tf_config_for_hosts(*found, port=env.port)
    os.environ[TF_CONFIG] = json.dumps(config)  # read by TensorFlow when the strategy is created
    log.info("SageMaker cluster of %d hosts; this is worker %d", len(found[0]), config["task"]["index"])
    return config


def is_chief(tf_config: str | None = None) -> bool:
    """Whether this process is the chief: the ``chief`` task, else worker 0 of a cluster without one, and any
    process that is not part of a cluster."""
    raw = ClusterEnv().tf_config if tf_config is None else tf_config
    if not raw:
        return True
    config = json.loads(raw)
    task = config.get("task") or {}
    kind, index = task.get("type"), int(task.get("index", 0))
    if kind in ("chief", "master"):
        return True
    has_chief = any(name in (config.get("cluster") or {}) for name in ("chief", "master"))
    return kind in (None, "worker") and index == 0 and not has_chief


@contextmanager
def export_dir(model_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """The folder to export into: ``model_dir`` on the chief; on other workers a temporary folder that is
    removed afterwards, so that exactly one export exists."""
    if is_chief():
        yield Path(model_dir)
        return
    scratch = Path(tempfile.mkdtemp(prefix="mri-worker-export-"))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        log.info("not the chief: this worker's copy of the export was discarded")


class UnsupportedKerasError(RuntimeError):
    """Multi-worker training on a Keras whose private internals the patch below was not tested with."""


def patch_keras_multi_worker() -> None:
    """Make Keras 3's ``fit`` work under ``MultiWorkerMirroredStrategy`` with more than one worker.

    Keras 3 (3.15 included) fails there before the first step (keras-team/keras#20585,
    tensorflow/tensorflow#72388): building the model reduces the first batch of the distributed dataset with
    ``strategy.reduce`` in eager mode, which ``CollectiveAllReduce`` cannot do, and the per-step logs are
    reduced with ``strategy.reduce("MEAN", value, axis=0)``, which fails for scalar metrics. Here the model is
    built from this worker's own part of the first batch (only shapes matter) and the logs are averaged over
    the workers without an axis (they already hold the same synchronised value everywhere). Gradients are
    all-reduced by the optimizer as before. Idempotent.

    These are private Keras internals (``keras.src``), whose names and shapes change between releases (Keras
    3.4-3.7's epoch iterator yields 2-tuples, for one): on a Keras not in ``TESTED_KERAS_VERSIONS`` this raises
    ``UnsupportedKerasError`` before touching anything.
    """
    import keras

    version = str(keras.__version__)
    if version not in TESTED_KERAS_VERSIONS:
        raise UnsupportedKerasError(
            f"multi-worker training patches private internals of Keras and was written and tested for Keras "
            f"{', '.join(TESTED_KERAS_VERSIONS)} only; this is Keras {version}. Install the pinned Keras "
            "(requirements/train.lock) or train on one worker"
        )
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer

    multi_worker = getattr(trainer, "_collective_all_reduce_multi_worker", None)
    original_reduce = getattr(trainer, "reduce_per_replica", None)
    original_build = getattr(trainer.TensorFlowTrainer, "_maybe_symbolic_build", None)
    if multi_worker is None or original_reduce is None or original_build is None:
        raise UnsupportedKerasError(f"Keras {version} lacks the internals patched for multi-worker training")
    if getattr(original_reduce, "_mri_patched", False):
        return

    def reduce_per_replica(values: Any, strategy: Any, reduction: str) -> Any:
        if reduction in ("auto", "mean") and multi_worker(strategy):
            return tree.map_structure(lambda value: strategy.reduce("MEAN", value, axis=None), values)
        return original_reduce(values, strategy, reduction)

    def maybe_symbolic_build(self: Any, iterator: Any = None, data_batch: Any = None) -> Any:
        strategy = self._distribute_strategy
        if iterator is None or strategy is None or not multi_worker(strategy):
            return original_build(self, iterator, data_batch)
        for _, _, batches in iterator:
            batch = next(batches)
            break
        local = tree.map_structure(
            lambda v: (
                strategy.experimental_local_results(v)[0] if isinstance(v, tf.distribute.DistributedValues) else v
            ),
            batch,
        )
        with strategy.scope():
            self._symbolic_build(data_batch=local)
        return None

    reduce_per_replica._mri_patched = True  # type: ignore[attr-defined]
    trainer.reduce_per_replica = reduce_per_replica
    trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
