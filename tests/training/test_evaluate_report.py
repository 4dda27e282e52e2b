"""The evaluator: the de-duplicated test subset collapses copies inside the test folder too (issue 14 item 5),
and the model version is found with the service's own rule (item 17: a version without saved_model.pb, e.g. a
copy in progress, is never picked)."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from service.imaging.preprocessing import PreprocessConfig
from service.labels import CLASSES
from tests.synthetic import jpeg_bytes
from training.evaluate import evaluate
from training.export import export_model
from training.model import build_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    meta = {"classes": list(CLASSES), "preprocessing": PreprocessConfig(image_size=32).to_dict()}
    export_model(build_model(32, backbone="tiny"), root, meta)
    return root


@pytest.fixture(scope="module")
def planted_test(tmp_path_factory, synthetic_dataset):
    """The synthetic test folder plus an exact and a near copy inside it, and a second copy of a training twin."""
    root = tmp_path_factory.mktemp("planted") / "test"
    shutil.copytree(synthetic_dataset.test, root)
    shutil.copy(root / "glioma_tumor" / "test_000.jpg", root / "glioma_tumor" / "again_000.jpg")
    small = Image.open(root / "meningioma_tumor" / "test_001.jpg").convert("RGB").resize((72, 72))
    small.save(root / "meningioma_tumor" / "smaller_001.png")
    twin = root / "no_tumor" / "twin_002.jpg"
    (root / "no_tumor" / "twin_002_again.jpg").write_bytes(jpeg_bytes(np.asarray(Image.open(twin)), quality=85))
    return root


def test_deduplicated_subset_keeps_one_image_per_in_test_group(model_dir, planted_test, synthetic_dataset, tmp_path):
    metrics = evaluate(model_dir, planted_test, tmp_path, train_data=synthetic_dataset.train, progress=False)
    original = sum(1 for p in synthetic_dataset.test.rglob("*") if p.is_file())
    twins = len(synthetic_dataset.test_twins)
    assert metrics["raw"]["n"] == original + 3
    d = metrics["deduplication"]
    assert d["in_test_copies_collapsed"] == 2 and d["in_test_duplicate_groups"] == 2
    assert d["dropped_with_a_training_twin"] == twins + 1
    assert d["in_test_cross_label_images_dropped"] == 0
    assert metrics["deduplicated"]["n"] == d["kept"] == original - twins
    assert d["kept"] + d["in_test_copies_collapsed"] + d["dropped_with_a_training_twin"] == d["images"]
    with (tmp_path / "predictions.csv").open() as fh:
        rows = {r["file"]: r for r in csv.DictReader(fh)}
    kept = {f for f, r in rows.items() if r["in_deduplicated_subset"] == "1"}
    assert len(kept) == metrics["deduplicated"]["n"]
    for a, b in (
        ("glioma_tumor/test_000.jpg", "glioma_tumor/again_000.jpg"),
        ("meningioma_tumor/test_001.jpg", "meningioma_tumor/smaller_001.png"),
    ):
        assert rows[a]["duplicate_group"] == rows[b]["duplicate_group"]
        assert len({a, b} & kept) == 1
    assert not {"no_tumor/twin_002.jpg", "no_tumor/twin_002_again.jpg"} & kept
    assert "2 copies inside the test folder" in (tmp_path / "summary.md").read_text()


def test_a_version_without_saved_model_is_never_evaluated(model_dir, synthetic_dataset, tmp_path):
    base = tmp_path / "models"
    shutil.copytree(model_dir, base)
    (base / "2").mkdir()  # a copy in progress: metadata first, the graph not yet
    (base / "2" / "metadata.json").write_text(json.dumps({"classes": list(CLASSES), "version": 2}))
    metrics = evaluate(base, synthetic_dataset.test, tmp_path / "report", progress=False)
    assert metrics["model"]["version"] == 1
    assert metrics["model"]["path"] == str(base / "1")
    with pytest.raises(FileNotFoundError, match="no SavedModel"):
        evaluate(base / "2", synthetic_dataset.test, tmp_path / "r2", progress=False)
