"""The real training job end to end: EfficientNetB0, 2 epochs at 32 px, --weights none, then evaluate."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from service.classifier import load_model
from service.labels import CLASSES
from service.preprocessing import PreprocessConfig, preprocess
from service.versions import find_version_dir
from tests.service.conftest import make_settings
from training import data as ds
from training.cli import main
from training.evaluate import predict_saved_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synthetic_dataset):
    out = tmp_path_factory.mktemp("train_job")
    argv = [
        "train",
        "--data",
        str(synthetic_dataset.train),
        "--test",
        str(synthetic_dataset.test),
        "--model-dir",
        str(out / "model"),
        "--work-dir",
        str(out / "work"),
        "--epochs",
        "2",
        "--image-size",
        "32",
        "--batch-size",
        "16",
        "--weights",
        "none",
        "--no-progress",
    ]
    assert main(argv) == 0
    return out


def test_export_layout_and_metadata(trained, synthetic_dataset):
    version = trained / "model" / "1"
    assert (version / "saved_model.pb").is_file() and (version / "variables").is_dir()
    assert not [p for p in (trained / "model").iterdir() if p.name.startswith(".tmp")]
    meta = json.loads((version / "metadata.json").read_text())
    assert meta["classes"] == list(CLASSES)
    assert meta["input"]["shape"] == [32, 32, 3]
    assert meta["preprocessing"]["image_size"] == 32
    assert meta["architecture"]["backbone"] == "efficientnet_b0"
    assert meta["architecture"]["weights"] == "none"
    assert len(meta["data"]["fingerprint"]) == 64
    dedup = meta["data"]["deduplication"]
    assert dedup["exact_copies_removed"] == len(synthetic_dataset.exact_copies)
    assert dedup["near_copies_removed"] == len(synthetic_dataset.near_copies)
    assert dedup["cross_label_groups"] == 1
    assert meta["data"]["test_twins"]["with_twin_in_training"] == len(synthetic_dataset.test_twins)
    assert 0 <= meta["validation"]["calibrated"]["accuracy"] <= 1
    assert meta["temperature"] == pytest.approx(meta["validation"]["temperature"])
    assert len(meta["history"]["loss"]) == 2
    assert meta["libraries"]["tensorflow"].startswith("2.21")


def test_no_duplicate_straddles_the_split(trained, synthetic_dataset):
    split = json.loads((trained / "work" / "split.json").read_text())
    train, val = set(split["train"]), set(split["val"])
    assert not train & val
    groups = split["groups"]
    assert {groups[f] for f in train}.isdisjoint({groups[f] for f in val})
    for a, b in synthetic_dataset.exact_copies + synthetic_dataset.near_copies:
        assert len({a, b} & (train | val)) == 1  # one copy kept, on one side
    assert not set(synthetic_dataset.cross_label[0]) & (train | val)


def test_saved_model_matches_the_keras_model(trained):
    import keras
    import tensorflow as tf

    from training.metrics import softmax
    from training.model import LOGITS_LAYER, build_model

    version = trained / "model" / "1"
    meta = json.loads((version / "metadata.json").read_text())
    model = build_model(32, "none", "efficientnet_b0")
    model.load_weights(trained / "work" / "phases" / "train.weights.h5")
    x = np.random.default_rng(1).uniform(0, 255, (5, 32, 32, 3)).astype("float32")
    logits = keras.Model(model.input, model.get_layer(LOGITS_LAYER).output).predict(x, verbose=0)
    expected = softmax(logits, meta["temperature"])
    served = tf.saved_model.load(str(version)).signatures["serving_default"](images=tf.constant(x))
    probs = served["probabilities"].numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs, expected, atol=1e-5)


def test_training_report(trained, synthetic_dataset):
    report = trained / "work" / "report"
    metrics = json.loads((report / "metrics.json").read_text())
    n_test = sum(1 for p in Path(synthetic_dataset.test).rglob("*.jpg"))
    assert metrics["raw"]["n"] == n_test
    assert metrics["deduplicated"]["n"] == n_test - len(synthetic_dataset.test_twins)
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "log_loss", "ece_15"):
        assert 0 <= metrics["raw"][key] <= (10 if key == "log_loss" else 1)
    assert set(metrics["raw"]["per_class"]) == set(CLASSES)
    assert np.array(metrics["raw"]["confusion_matrix"]).sum() == n_test
    with (report / "predictions.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == n_test
    assert sum(int(r["has_training_twin"]) for r in rows) == len(synthetic_dataset.test_twins)
    # the exported model's own ood_score for each file, through the service's loading and preprocessing (in a
    # batch of another size, whose float32 sums differ in the last bits: 1 - cosine near 0 shows them)
    served = load_model(make_settings(trained / "model"))
    files = [Path(synthetic_dataset.test) / r["file"] for r in rows]
    scores = served.infer(np.stack([preprocess(f.read_bytes(), served.preprocess) for f in files]))["ood_score"]
    for r, score in zip(rows, scores, strict=True):
        assert sum(float(r[f"p_{c}"]) for c in CLASSES) == pytest.approx(1, abs=1e-4)
        assert int(r["correct"]) == int(r["true_label"] == r["predicted_label"])
        assert float(r["ood_score"]) == pytest.approx(float(score), abs=1e-4), r["file"]
        assert r["warning"] in ("0", "1")
    warning = metrics["warning_raw"]
    assert warning["images"] == n_test and ("error_auroc" in warning or 0 in (warning["wrong"], warning["correct"]))
    for name in (
        "confusion_raw",
        "confusion_deduplicated",
        "per_class_raw",
        "reliability_raw",
        "reliability_deduplicated",
        "training_curves",
    ):
        assert (report / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_command_recomputes_twins_from_training_data(trained, synthetic_dataset, tmp_path, capsys):
    out = tmp_path / "report"
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(trained / "model"),
                "--data",
                str(synthetic_dataset.test),
                "--out",
                str(out),
                "--train-data",
                str(synthetic_dataset.train),
                "--no-progress",
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["twin_source"].startswith("recomputed")
    assert metrics["deduplicated"]["n"] == metrics["raw"]["n"] - len(synthetic_dataset.test_twins)
    printed = capsys.readouterr().out
    assert "deduplicated" in printed and "raw" in printed


def test_evaluate_with_flip_tta_averages_image_and_mirror(trained, synthetic_dataset, tmp_path):
    argv = ["evaluate", "--model", str(trained / "model"), "--data", str(synthetic_dataset.test), "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "plain")]) == 0
    assert main([*argv, "--out", str(tmp_path / "flip"), "--tta", "flip"]) == 0
    tta = json.loads((tmp_path / "flip" / "metrics.json").read_text())
    assert tta["tta"] == "flip"
    assert "Test-time augmentation: flip" in (tmp_path / "flip" / "summary.md").read_text()

    def probabilities(report: Path) -> np.ndarray:
        with (report / "predictions.csv").open() as fh:
            return np.array([[float(r[f"p_{c}"]) for c in CLASSES] for r in csv.DictReader(fh)])

    plain, flipped = probabilities(tmp_path / "plain"), probabilities(tmp_path / "flip")
    version_dir = find_version_dir(trained / "model")
    config = PreprocessConfig.from_dict(json.loads((version_dir / "metadata.json").read_text())["preprocessing"])
    samples, skipped = ds.scan_folder(synthetic_dataset.test, require_all_classes=False)
    mirrored = predict_saved_model(version_dir, ds.load_images(samples, config, skipped, False).images[:, :, ::-1])
    np.testing.assert_allclose(flipped, (plain + mirrored) / 2, atol=1e-4)
    np.testing.assert_allclose(flipped.sum(axis=1), 1.0, atol=1e-4)
