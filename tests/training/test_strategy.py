"""Distribution strategy selection, exercised on CPU with a one-device MirroredStrategy."""

from __future__ import annotations

import json

import numpy as np
import tensorflow as tf

from training.train import PreparedData, TrainConfig, fit, select_strategy


def test_default_strategy_without_gpus_or_cluster(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategy = select_strategy()
    assert not isinstance(strategy, tf.distribute.MirroredStrategy)
    assert strategy.num_replicas_in_sync == 1


def test_single_worker_tf_config_does_not_select_multi_worker(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["localhost:1"]}, "task": {}}))
    assert not isinstance(select_strategy(), tf.distribute.MultiWorkerMirroredStrategy)


def test_one_device_mirrored_strategy_trains_on_cpu(tmp_path):
    strategy = select_strategy(force_mirrored=True)
    assert isinstance(strategy, tf.distribute.MirroredStrategy)
    assert strategy.num_replicas_in_sync == 1
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (16, 32, 32, 3), dtype=np.uint8)
    y = np.arange(16) % 4
    data = PreparedData(x, y, x[:8], y[:8], info={})
    config = TrainConfig(
        data="unused",
        work_dir=str(tmp_path),
        backbone="tiny",
        weights="none",
        image_size=32,
        epochs=1,
        freeze_epochs=0,
        batch_size=4,
        progress=False,
    )
    model, history = fit(config, data, strategy)
    assert len(history["loss"]) == 1 and np.isfinite(history["loss"][0])
    assert model.predict(x[:2].astype("float32"), verbose=0).shape == (2, 4)
