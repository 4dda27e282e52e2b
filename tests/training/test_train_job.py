"""The whole recipe end to end on a tiny dataset: every default is the shipped recipe's (Lite0, brain crop,
probe, WiSE-FT mix, temperature, kNN bank, warning thresholds, report, publish) except the image size, the
epochs and the ImageNet weights (``--weights none``); then resuming it."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from service.imaging.preprocessing import PreprocessConfig, preprocess
from service.inference.classifier import load_model
from service.inference.versions import find_version_dir
from service.labels import CLASSES
from tests.service.conftest import make_settings
from training import data as ds
from training.cli import main
from training.evaluate import predict_saved_model
from training.recipe import recipe
from training.stages import STAGES

pytestmark = pytest.mark.slow

SMALL = ["--weights", "none", "--image-size", "32", "--epochs", "1", "--freeze-epochs", "0", "--batch-size", "16"]


def _argv(out: Path, dataset, dev: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--data",
        str(dataset.train),
        "--test",
        str(dataset.test),
        "--dev-dir",
        str(dev),
        "--model-dir",
        str(out / "model"),
        "--work-dir",
        str(out / "work"),
        *SMALL,
        "--no-progress",
        *extra,
    ]


@pytest.fixture(scope="module")
def dev_folder(tmp_path_factory) -> Path:
    """A labelled folder "from another source": other images, another size."""
    from tests.synthetic import make_dataset

    return make_dataset(tmp_path_factory.mktemp("dev"), per_class=4, test_per_class=5, size=64, seed=1).test


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synthetic_dataset, dev_folder):
    out = tmp_path_factory.mktemp("train_job")
    assert main(_argv(out, synthetic_dataset, dev_folder)) == 0
    return out


def _metadata(trained: Path) -> dict:
    return json.loads((trained / "model" / "1" / "metadata.json").read_text())


def test_export_layout_and_metadata(trained, synthetic_dataset):
    version = trained / "model" / "1"
    assert (version / "saved_model.pb").is_file() and (version / "variables").is_dir()
    assert sorted(p.name for p in (trained / "model").iterdir()) == ["1"], "one version, no temporary folder"
    meta = _metadata(trained)
    assert meta["version"] == 1
    assert meta["classes"] == list(CLASSES)
    assert meta["input"]["shape"] == [32, 32, 3]
    assert meta["preprocessing"]["image_size"] == 32 and meta["preprocessing"]["crop_brain"] is True
    assert meta["architecture"]["backbone"] == "efficientnet_lite0"
    assert meta["architecture"]["weights"] == "none"
    assert meta["recipe_overrides"] == {
        "weights": ["imagenet", "none"],
        "image_size": [224, 32],
        "epochs": [16, 1],
        "freeze_epochs": [2, 0],
        "batch_size": [32, 16],
    }
    shipped = recipe()
    for key in ("label_smoothing", "fine_tune_from", "probe_c", "mix_alphas", "mix_rule", "ood_k"):
        assert meta["training"][key] == shipped[key], key
    assert len(meta["data"]["fingerprint"]) == 64
    dedup = meta["data"]["deduplication"]
    assert dedup["exact_copies_removed"] == len(synthetic_dataset.exact_copies)
    assert dedup["near_copies_removed"] == len(synthetic_dataset.near_copies)
    assert dedup["cross_label_groups"] == 1
    assert meta["data"]["test_twins"]["with_twin_in_training"] == len(synthetic_dataset.test_twins)
    assert 0 <= meta["validation"]["calibrated"]["accuracy"] <= 1
    assert meta["temperature"] == pytest.approx(meta["validation"]["temperature"])
    assert len(meta["history"]["loss"]) == 1
    assert meta["libraries"]["tensorflow"].startswith("2.21")
    assert meta["signatures"]["serving_default"]["outputs"] == ["probabilities", "ood_score"]
    assert meta["signatures"]["gradcam"]["outputs"] == ["probabilities", "heatmap", "class_index"]
    assert meta["ood_score"]["bank_size"] == meta["data"]["split"]["train"]


def test_the_mix_follows_the_rule_on_validation_and_the_dev_folder(trained, dev_folder):
    meta = _metadata(trained)
    wise = meta["wise_ft"]
    assert wise["grid"] == recipe()["mix_alphas"] and wise["rule"] == "validation-floor-then-dev"
    mixes = {float(a): m for a, m in wise["mixes"].items()}
    assert sorted(mixes) == wise["grid"]
    floor = mixes[1.0]["val_accuracy"]
    allowed = {a: m["dev_accuracy"] for a, m in mixes.items() if m["val_accuracy"] >= floor - 1e-9}
    best = max(allowed.values())
    assert wise["alpha"] == max(a for a, acc in allowed.items() if acc == best)
    assert wise["linear_probe"]["c"] in recipe()["probe_c"]
    assert len(wise["linear_probe"]["sweep"]) == len(recipe()["probe_c"])
    images = sum(1 for p in dev_folder.rglob("*.jpg"))
    assert meta["dev_set"]["name"] == dev_folder.name and meta["dev_set"]["images"] == images
    assert meta["ood"]["calibration"]["chosen_on"] == f"validation and {dev_folder.name}"
    assert set(meta["ood"]["calibration"]["warnings"]) == {"validation", dev_folder.name}
    for key in ("max_colour_spread", "max_border_brightness", "min_confidence", "max_ood_score"):
        assert isinstance(meta["ood"][key], float), key


def test_every_stage_has_its_wall_and_cpu_time(trained):
    stages = _metadata(trained)["stages"]
    assert [s["stage"] for s in stages] == list(STAGES[:-1]), "publish comes after the metadata is final"
    for s in stages:
        assert s["wall_s"] >= 0 and s["cpu_s"] >= 0 and s["resumed"] is False, s
    assert next(s for s in stages if s["stage"] == "finetune")["cpu_s"] > 0
    record = json.loads((trained / "work" / "stages" / "publish.json").read_text())
    assert record["result"]["version_dir"] == str(trained / "model" / "1")


def test_no_duplicate_straddles_the_split(trained, synthetic_dataset):
    split = json.loads((trained / "work" / "split.json").read_text())
    train, val = set(split["train"]), set(split["val"])
    assert not train & val
    groups = split["groups"]
    assert {groups[f] for f in train}.isdisjoint({groups[f] for f in val})
    for a, b in synthetic_dataset.exact_copies + synthetic_dataset.near_copies:
        assert len({a, b} & (train | val)) == 1  # one copy kept, on one side
    assert not set(synthetic_dataset.cross_label[0]) & (train | val)


def test_saved_model_is_the_mixed_model_with_its_temperature(trained):
    import keras
    import tensorflow as tf

    from training.metrics import softmax
    from training.model import LOGITS_LAYER, build_model

    version = trained / "model" / "1"
    meta = json.loads((version / "metadata.json").read_text())
    model = build_model(32, "none", "efficientnet_lite0")
    model.load_weights(trained / "work" / "stages" / "mix.weights.h5")
    x = np.random.default_rng(1).uniform(0, 255, (5, 32, 32, 3)).astype("float32")
    logits = keras.Model(model.input, model.get_layer(LOGITS_LAYER).output).predict(x, verbose=0)
    expected = softmax(logits, meta["temperature"])
    served = tf.saved_model.load(str(version)).signatures["serving_default"](images=tf.constant(x))
    probs = served["probabilities"].numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs, expected, atol=1e-5)


def test_the_mixed_head_is_the_chosen_blend_of_probe_and_fine_tuned(trained):
    from training.model import LOGITS_LAYER, build_model

    alpha = _metadata(trained)["wise_ft"]["alpha"]
    probe = np.load(trained / "work" / "stages" / "probe.npz")
    tuned, mixed = build_model(32, "none", "efficientnet_lite0"), build_model(32, "none", "efficientnet_lite0")
    tuned.load_weights(trained / "work" / "phases" / "train.weights.h5")
    mixed.load_weights(trained / "work" / "stages" / "mix.weights.h5")
    kernel = (1 - alpha) * probe["coef"] + alpha * tuned.get_layer(LOGITS_LAYER).get_weights()[0]
    np.testing.assert_allclose(mixed.get_layer(LOGITS_LAYER).get_weights()[0], kernel, atol=1e-6)


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
    dev_metrics = json.loads((report / "dev" / "metrics.json").read_text())
    assert dev_metrics["model"]["version"] == 1
    text = (report / "training_report.md").read_text()
    for stage in STAGES[:-1]:
        assert f"| {stage} |" in text, stage
    assert "used only to choose the mix's alpha and the warning thresholds" in text
    summary = json.loads((report / "training_report.json").read_text())
    assert summary["evaluation"]["test"]["raw"]["n"] == n_test
    assert summary["evaluation"]["dev"]["raw"]["accuracy"] == pytest.approx(dev_metrics["raw"]["accuracy"])


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


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_resume_reuses_the_stages_and_continues_a_fine_tuned_work_dir(
    trained, synthetic_dataset, dev_folder, tmp_path, capsys
):
    """A second run with --resume changes nothing; a work folder with only the fine-tuning phases (as an older
    version of this job leaves it) is continued from the probe on, without training again."""
    tuned = trained / "work" / "phases" / "train.weights.h5"
    before = _digest(tuned)
    capsys.readouterr()
    assert main(_argv(trained, synthetic_dataset, dev_folder, "--resume")) == 0
    out = capsys.readouterr().out
    assert "Epoch" not in out and json.loads(out.strip().splitlines()[-1]) == {"model": str(trained / "model" / "1")}
    assert sorted(p.name for p in (trained / "model").iterdir()) == ["1"], "nothing published twice"
    records = [json.loads((trained / "work" / "stages" / f"{s}.json").read_text()) for s in STAGES[2:-1]]
    assert all(r["times"]["wall_s"] >= 0 for r in records)

    copy = tmp_path / "copy"
    shutil.copytree(trained / "work", copy / "work")
    shutil.rmtree(copy / "work" / "stages")
    shutil.rmtree(copy / "work" / "export")
    assert main(_argv(copy, synthetic_dataset, dev_folder, "--resume", "--mix-alphas", "0,1")) == 0
    out = capsys.readouterr().out
    assert "Epoch" not in out, "fine-tuning ran again"
    assert _digest(copy / "work" / "phases" / "train.weights.h5") == before
    meta = json.loads((copy / "model" / "1" / "metadata.json").read_text())
    finetune = next(s for s in meta["stages"] if s["stage"] == "finetune")
    assert finetune["resumed"] is True and "load" in finetune["note"]
    assert [s["resumed"] for s in meta["stages"] if s["stage"] != "finetune"] == [False] * 8
    assert sorted(meta["wise_ft"]["mixes"]) == ["0.0", "1.0"]
    assert meta["history"] == _metadata(trained)["history"]


def test_lp_ft_runs_the_probe_first_and_fine_tunes_from_its_head(synthetic_dataset, dev_folder, tmp_path):
    """``--head-init probe`` (LP-FT): the probe stage runs before fine-tuning and fine-tuning starts from its
    head; with a learning rate of 0 the fine-tuned head is the probe's, exactly."""
    from training.model import LOGITS_LAYER, build_model

    argv = _argv(tmp_path, synthetic_dataset, dev_folder, "--head-init", "probe", "--fine-tune-learning-rate", "0")
    assert main(argv) == 0
    work = tmp_path / "work"
    assert sorted(p.name for p in (work / "phases").iterdir()) == ["finetune.weights.h5"], "no head-only phase"
    records = {s: json.loads((work / "stages" / f"{s}.json").read_text()) for s in ("probe", "finetune")}
    assert records["probe"]["times"]["finished"] <= records["finetune"]["times"]["finished"]
    assert records["finetune"]["key"]["head_init"] == "probe" and "probe_c" in records["finetune"]["key"]
    model = build_model(32, "none", "efficientnet_lite0", 0.3)
    model.load_weights(work / "phases" / "finetune.weights.h5")
    kernel, bias = model.get_layer(LOGITS_LAYER).get_weights()
    with np.load(work / "stages" / "probe.npz") as probe:
        np.testing.assert_array_equal(kernel, probe["coef"])
        np.testing.assert_array_equal(bias, probe["intercept"])
    meta = json.loads((tmp_path / "model" / "1" / "metadata.json").read_text())
    assert meta["training"]["head_init"] == "probe" and meta["wise_ft"]["linear_probe"]["c"] in recipe()["probe_c"]
    assert meta["recipe_overrides"]["head_init"] == ["random", "probe"]
