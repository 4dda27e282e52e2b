"""``prepare`` writes de-duplicated, split TFRecord shards that ``train`` reads instead of the folder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.cli import main
from training.records import load_split


@pytest.mark.slow
def test_prepare_then_train_from_shards(tmp_path, synthetic_dataset):
    shards = tmp_path / "shards"
    argv = [
        "prepare",
        "--data",
        str(synthetic_dataset.train),
        "--test",
        str(synthetic_dataset.test),
        "--out",
        str(shards),
        "--image-size",
        "32",
        "--shard-size",
        "16",
        "--no-progress",
    ]
    assert main(argv) == 0
    manifest = json.loads((shards / "dataset.json").read_text())
    assert manifest["classes"] == ["glioma", "meningioma", "no_tumor", "pituitary"]
    assert manifest["deduplication"]["exact_copies_removed"] == len(synthetic_dataset.exact_copies)
    assert manifest["test_twins"]["with_twin_in_training"] == len(synthetic_dataset.test_twins)
    train_x, train_y, _ = load_split(shards, "train")
    _, val_y, _ = load_split(shards, "val")
    assert train_x.shape[1:] == (32, 32, 3) and train_x.dtype == np.uint8
    assert len(train_y) + len(val_y) == manifest["deduplication"]["kept"]
    assert len(list(shards.glob("train-*.tfrecord"))) == len(manifest["shards"]["train"]) > 1

    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(shards),
                "--model-dir",
                str(out / "model"),
                "--work-dir",
                str(out / "work"),
                "--epochs",
                "1",
                "--image-size",
                "32",
                "--backbone",
                "tiny",
                "--no-progress",
            ]
        )
        == 0
    )
    meta = json.loads((out / "model" / "1" / "metadata.json").read_text())
    assert meta["data"]["source"] == "tfrecord"
    assert meta["data"]["fingerprint"] == manifest["fingerprint"]


def test_shards_of_another_size_are_refused(tmp_path, synthetic_dataset):
    shards = tmp_path / "shards"
    assert (
        main(
            [
                "prepare",
                "--data",
                str(synthetic_dataset.train),
                "--out",
                str(shards),
                "--image-size",
                "32",
                "--no-progress",
            ]
        )
        == 0
    )
    with pytest.raises(ValueError, match="--image-size 32"):
        main(
            [
                "train",
                "--data",
                str(shards),
                "--image-size",
                "64",
                "--backbone",
                "tiny",
                "--work-dir",
                str(tmp_path / "w"),
                "--model-dir",
                str(tmp_path / "m"),
                "--no-progress",
            ]
        )
