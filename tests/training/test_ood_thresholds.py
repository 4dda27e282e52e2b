"""The warning thresholds (``training.ood_thresholds``): the joint choice of the image thresholds, the
``ood_score`` threshold, and a whole calibration of a real tiny exported model read back by the service."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from service.checks import input_check
from training.ood_thresholds import (
    Answers,
    Collection,
    auroc,
    calibrate,
    choose,
    choose_ood_threshold,
    warned,
    write_metadata,
)


def _stats(rng: np.random.Generator, n: int, mri: bool) -> dict[str, np.ndarray]:
    return {
        "colour_spread": rng.uniform(0, 0.01, n) if mri else rng.uniform(0.005, 0.3, n),
        "border_brightness": rng.uniform(0, 0.1, n) if mri else rng.uniform(0.05, 0.9, n),
        "confidence": rng.uniform(0.5, 1.0, n) if mri else rng.uniform(0.25, 0.9, n),
        "ood_score": rng.uniform(0, 0.3, n) if mri else rng.uniform(0.2, 1.0, n),
    }


def test_auroc_counts_ties_as_half() -> None:
    assert auroc(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 1.0
    assert auroc(np.array([1.0]), np.array([1.0])) == 0.5


def test_choose_keeps_the_target_of_every_set_at_the_lowest_false_accept() -> None:
    rng = np.random.default_rng(0)
    sets, other = [_stats(rng, 200, True), _stats(rng, 80, True)], _stats(rng, 150, False)
    thresholds, tar, far = choose(sets, other, 0.95, input_check.Thresholds(max_colour_spread=0.02))
    assert thresholds.max_colour_spread >= 0.02
    for s in sets:  # every MRI set keeps at least the target, not only the pooled slices
        kept = (
            (s["colour_spread"] <= thresholds.max_colour_spread)
            & (s["border_brightness"] <= thresholds.max_border_brightness)
            & (s["confidence"] >= thresholds.min_confidence)
        )
        assert kept.mean() >= 0.95
    assert tar >= 0.95 and 0 <= far < 0.5, "most non-MRI images are rejected"


def test_the_ood_threshold_keeps_at_most_the_share_of_correct_answers_warned() -> None:
    rng = np.random.default_rng(1)
    sets = []
    for n in (300, 120):
        stats = _stats(rng, n, True)
        correct = rng.uniform(size=n) < 0.9
        stats["ood_score"] = np.where(correct, rng.uniform(0, 0.3, n), rng.uniform(0.2, 0.6, n))
        sets.append(Answers(f"set{n}", stats, correct))
    image = input_check.Thresholds(1.0, 1.0, 0.0)
    limit = choose_ood_threshold(sets, image, 0.05)
    assert limit is not None
    chosen = input_check.Thresholds(1.0, 1.0, 0.0, max_ood_score=limit)
    for a in sets:
        assert warned(a, chosen)[a.correct].mean() <= 0.05
    lower = input_check.Thresholds(1.0, 1.0, 0.0, max_ood_score=float(np.nextafter(limit, 0)))
    assert any(warned(a, lower)[a.correct].mean() > 0.05 for a in sets), "not the lowest such threshold"
    no_score = [Answers("x", {**sets[0].stats, "ood_score": np.full(300, np.nan)}, sets[0].correct)]
    assert choose_ood_threshold(no_score, image, 0.05) is None


@pytest.mark.slow
def test_calibrate_a_tiny_exported_model(tmp_path: Path) -> None:
    import keras

    from service.config import Settings
    from service.imaging.preprocessing import PreprocessConfig, to_model_input
    from service.inference.classifier import load_model
    from service.labels import CLASSES
    from tests.synthetic import mri_like
    from training.export import export_model
    from training.model import build_model
    from training.ood_score import embed

    keras.utils.set_random_seed(3)
    config = PreprocessConfig(image_size=32)
    rng = np.random.default_rng(2)
    labels = np.arange(96) % 4
    x = np.stack([to_model_input(mri_like(int(c), rng, 64), config) for c in labels])
    model = build_model(32, "none", "tiny", 0.0)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(x[:64].astype("float32"), labels[:64], epochs=6, batch_size=16, verbose=0)
    meta = {"model_name": "mri-classifier", "classes": list(CLASSES), "preprocessing": config.to_dict()}
    version = export_model(model, tmp_path, meta, 1.0, 1, embed(model, x[:64]), 5)
    settings = Settings(_env_file=None, model_dir=tmp_path, runtime="tensorflow", warmup=False)  # type: ignore[call-arg]
    loaded = load_model(settings)
    labelled = {
        "validation": Collection(list(x[64:80]), ["MRI"] * 16, labels[64:80].tolist()),
        "dev": Collection(list(x[80:]), ["MRI"] * 16, labels[80:].tolist()),
    }
    result = calibrate(loaded, labelled, target_tar=0.9, max_warned=0.2)
    assert set(result.warnings) == {"validation", "dev"}
    for a in result.sets.values():
        image_only = input_check.Thresholds(
            result.thresholds.max_colour_spread,
            result.thresholds.max_border_brightness,
            result.thresholds.min_confidence,
        )
        assert (~warned(a, image_only)).mean() >= 0.9
    assert result.thresholds.max_ood_score is not None
    assert result.other_accepted < 0.5, "most non-MRI images are flagged"
    section = result.section()
    assert section["calibration"]["in_distribution"] == "32 MRI slices (validation, dev)"
    write_metadata(version, section)
    stored = json.loads((version / "metadata.json").read_text())
    assert input_check.Thresholds.from_metadata(stored, input_check.Thresholds()) == result.thresholds
