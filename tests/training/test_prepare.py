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
    assert main([*argv, "--crop-brain"]) == 0
    manifest = json.loads((shards / "dataset.json").read_text())
    assert manifest["preprocessing"]["crop_brain"] is True
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
                "--weights",
                "none",
                "--freeze-epochs",
                "0",
                "--mix-alphas",
                "1",
                "--crop-brain",
                "--no-progress",
            ]
        )
        == 0
    )
    meta = json.loads((out / "model" / "1" / "metadata.json").read_text())
    assert meta["data"]["source"] == "tfrecord"
    assert meta["data"]["fingerprint"] == manifest["fingerprint"]
    assert meta["preprocessing"] == manifest["preprocessing"]  # what the model learnt on is what it is served with
    assert meta["data"]["split_parameters"] == {"seed": 42, "val_fraction": 0.2, "near_threshold": 0.97}
    text = (out / "model" / "1" / "metadata.json").read_text()
    names = [p.name for p in synthetic_dataset.train.rglob("*.*")] + synthetic_dataset.test_twins
    assert not [n for n in names if n in text]  # the manifest's file names stay out of the model


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
                "--weights",
                "none",
                "--work-dir",
                str(tmp_path / "w"),
                "--model-dir",
                str(tmp_path / "m"),
                "--no-progress",
            ]
        )


def _prepare(data, out, *extra: str) -> None:
    argv = ["prepare", "--data", str(data), "--out", str(out), "--image-size", "32", "--no-progress", *extra]
    assert main(argv) == 0


def _train_argv(shards, tmp_path, *extra: str) -> list[str]:
    return [
        "train",
        "--data",
        str(shards),
        "--image-size",
        "32",
        "--backbone",
        "tiny",
        "--weights",
        "none",
        "--work-dir",
        str(tmp_path / "w"),
        "--model-dir",
        str(tmp_path / "m"),
        "--no-progress",
        *extra,
    ]


def test_shards_prepared_with_a_brain_crop_are_refused_without_it(tmp_path, synthetic_dataset):
    """Issue 14 item 1: the model would be exported (and served) without the crop its shards were made with."""
    shards = tmp_path / "shards"
    _prepare(synthetic_dataset.train, shards)  # the recipe crops the brain
    with pytest.raises(ValueError, match=r"crop_brain True \(asked: False\).*train with --image-size 32 --crop-brain"):
        main(_train_argv(shards, tmp_path, "--no-crop-brain"))
    assert not (tmp_path / "m").exists()


def test_shards_prepared_another_way_than_train_can_ask_are_refused(tmp_path, synthetic_dataset):
    shards = tmp_path / "shards"
    _prepare(synthetic_dataset.train, shards)
    manifest = json.loads((shards / "dataset.json").read_text())
    manifest["preprocessing"]["crop_margin"] = 0.2
    (shards / "dataset.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"crop_margin 0.2.*run `mri-classifier prepare` again"):
        main(_train_argv(shards, tmp_path))


def _pixel_set(images: np.ndarray) -> set[bytes]:
    return {img.tobytes() for img in images}


def test_prepare_again_replaces_the_old_shards(tmp_path, synthetic_dataset):
    """Issue 14 item 2: a second `prepare` with another shard count and seed leaves no shard of the first."""
    shards = tmp_path / "shards"
    _prepare(synthetic_dataset.train, shards, "--shard-size", "8", "--seed", "1")
    first = json.loads((shards / "dataset.json").read_text())
    _prepare(synthetic_dataset.train, shards, "--shard-size", "64", "--seed", "2")
    second = json.loads((shards / "dataset.json").read_text())
    assert len(first["shards"]["train"]) > len(second["shards"]["train"])
    on_disk = sorted(p.name for p in shards.iterdir())
    assert on_disk == sorted(["dataset.json", *second["shards"]["train"], *second["shards"]["val"]])
    train_x, train_y, _ = load_split(shards, "train")
    val_x, val_y, _ = load_split(shards, "val")
    assert (len(train_y), len(val_y)) == (second["split"]["train"], second["split"]["val"])
    assert not _pixel_set(train_x) & _pixel_set(val_x)  # no validation image is trained on
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_load_split_reads_only_the_shards_the_manifest_lists(tmp_path, synthetic_dataset):
    shards = tmp_path / "shards"
    _prepare(synthetic_dataset.train, shards, "--shard-size", "16")
    manifest = json.loads((shards / "dataset.json").read_text())
    val_x, _, _ = load_split(shards, "val")
    # a stale shard from another run, holding this run's validation images
    (shards / "train-00000-of-00099.tfrecord").write_bytes((shards / manifest["shards"]["val"][0]).read_bytes())
    train_x, train_y, _ = load_split(shards, "train")
    assert len(train_y) == manifest["split"]["train"]
    assert not _pixel_set(train_x) & _pixel_set(val_x)
    (shards / manifest["shards"]["train"][-1]).unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        load_split(shards, "train")


def test_prepare_refuses_a_folder_it_did_not_write(tmp_path, synthetic_dataset):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="does not hold only `prepare` shards"):
        main(["prepare", "--data", str(synthetic_dataset.train), "--out", str(out), "--no-progress"])
    assert (out / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
