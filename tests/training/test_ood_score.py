"""The "unlike the training images" score on the training side: the Keras layer equals its NumPy reference,
and ``training.reexport`` recovers a version's weights by name and exports it again with the score while its
probabilities stay identical."""

from __future__ import annotations

import json

import keras
import numpy as np
import tensorflow as tf

from service.imaging.preprocessing import PreprocessConfig
from service.labels import CLASSES
from tests.synthetic import make_dataset
from training.export import export_model
from training.model import build_model
from training.ood_score import embed, knn_distance, ood_layer
from training.reexport import reexport, restore_weights


def _metadata(size: int) -> dict:
    return {
        "classes": list(CLASSES),
        "preprocessing": PreprocessConfig(image_size=size).to_dict(),
        "architecture": {"backbone": "tiny", "dropout": 0.0},
        "training": {"seed": 42, "val_fraction": 0.25, "near_threshold": 0.97},
    }


def test_layer_matches_the_numpy_reference_and_ranks_far_points_higher():
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(50, 16)).astype(np.float32) + 3.0  # a cluster away from the origin
    near = bank[:10] + rng.normal(scale=0.05, size=(10, 16)).astype(np.float32)
    far = -bank[:10]  # the opposite direction: cosine similarity near -1
    queries = np.concatenate([near, far])
    got = np.asarray(ood_layer(bank, k=3)(queries))
    np.testing.assert_allclose(got, knn_distance(queries, bank, k=3), atol=1e-3)  # float16 bank
    assert got[:10].max() < got[10:].min()
    assert ood_layer(bank[:2], k=10).k == 2  # never more neighbours than the bank holds


def test_restore_weights_recovers_an_exported_model(tmp_path):
    keras.utils.set_random_seed(1)
    source = build_model(image_size=32, backbone="tiny", dropout=0.0)
    version = export_model(source, tmp_path / "m", _metadata(32), temperature=1.0, version=1)
    keras.utils.set_random_seed(2)
    fresh = build_model(image_size=32, backbone="tiny", dropout=0.0)
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    assert not np.allclose(fresh.predict(x, verbose=0), source.predict(x, verbose=0))
    assert restore_weights(fresh, version) == len(source.weights)
    np.testing.assert_allclose(fresh.predict(x, verbose=0), source.predict(x, verbose=0), atol=1e-6)


def test_reexport_adds_the_score_and_keeps_the_probabilities(tmp_path):
    dataset = make_dataset(tmp_path / "data", per_class=8, test_per_class=1, size=48)
    keras.utils.set_random_seed(3)
    model = build_model(image_size=32, backbone="tiny", dropout=0.0)
    old = export_model(model, tmp_path / "m", _metadata(32), temperature=0.7, version=2)
    new = reexport(old, dataset.train, tmp_path / "m", None, 3)
    assert new.name == "3"
    meta = json.loads((new / "metadata.json").read_text())
    assert meta["signatures"]["serving_default"]["outputs"] == ["probabilities", "ood_score"]
    assert meta["temperature"] == 0.7 and meta["ood_score"]["k"] == 3
    assert meta["ood_score"]["bank_size"] == 24  # 4 x 8 images less duplicates, 75% of them in training
    assert meta["derived_from"]["version"] == 2 and meta["derived_from"]["max_abs_diff_probabilities"] < 1e-6
    x = tf.constant(np.random.default_rng(1).uniform(0, 255, (3, 32, 32, 3)), tf.float32)
    before = tf.saved_model.load(str(old)).signatures["serving_default"](images=x)
    after = tf.saved_model.load(str(new)).signatures["serving_default"](images=x)
    np.testing.assert_allclose(after["probabilities"].numpy(), before["probabilities"].numpy(), atol=1e-6)
    reference = knn_distance(embed(model, x.numpy()), embed(model, _train_images(dataset, meta)), k=3)
    np.testing.assert_allclose(after["ood_score"].numpy(), reference, atol=1e-3)


def _train_images(dataset, meta) -> np.ndarray:
    from training.reexport import recreate_split

    loaded, train_idx, _ = recreate_split(dataset.train, meta, PreprocessConfig(image_size=32))
    return loaded.images[train_idx]
