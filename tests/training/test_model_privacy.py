"""Issue 14 item 14: nothing inside the exported version folder (metadata.json travels in images and in
model.tar.gz) names a training or test file; the names go only to the training report beside it."""

from __future__ import annotations

import json
import shutil
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.synthetic import jpeg_bytes
from training.cli import main
from training.data import without_file_names

# file names such as hospital exports use: they must never reach the model
PATIENT_NAMES = {
    "skipped": "glioma_tumor/Doe_Jane_1970-01-01.txt",
    "broken": "glioma_tumor/Roe_Richard_MRN4711.jpg",
    "cross_label": "meningioma_tumor/Poe_Edgar_MRN0815.jpg",
    "twin": "no_tumor/Moe_Anna_MRN2024.jpg",
}


def test_without_file_names_keeps_counts_and_hashes():
    info: dict[str, Any] = {
        "fingerprint": "ab" * 32,
        "skipped_files": [{"file": "a/Doe.jpg", "reason": "unreadable file"}, {"file": "a/x.txt", "reason": "txt"}],
        "deduplication": {
            "cross_label_groups": 1,
            "cross_label_examples": [{"members": [{"file": "a/Doe.jpg"}]}],
            "kept": 3,
        },
        "test_twins": {"images": 2, "files": ["b/Roe.jpg"], "pixel_hashes": ["cd" * 32]},
        "split": {"train": 2, "val": 1},
    }
    safe = without_file_names(info)
    assert "Doe" not in json.dumps(safe) and "Roe" not in json.dumps(safe) and "x.txt" not in json.dumps(safe)
    assert safe["skipped_files"] == {"count": 2, "reasons": {"txt": 1, "unreadable file": 1}}
    assert safe["deduplication"] == {"cross_label_groups": 1, "kept": 3}
    assert safe["test_twins"] == {"images": 2, "pixel_hashes": ["cd" * 32]}
    assert safe["fingerprint"] == info["fingerprint"] and safe["split"] == info["split"]
    assert info["test_twins"]["files"] == ["b/Roe.jpg"]  # the report's copy is untouched


@pytest.mark.slow
def test_no_file_name_reaches_the_exported_model(tmp_path, synthetic_dataset):
    train, test = tmp_path / "data" / "train", tmp_path / "data" / "test"
    shutil.copytree(synthetic_dataset.train, train)
    shutil.copytree(synthetic_dataset.test, test)
    (train / PATIENT_NAMES["skipped"]).write_text("notes")
    (train / PATIENT_NAMES["broken"]).write_bytes(b"\xff\xd8\xff\xe0 truncated")
    shutil.copy(train / "glioma_tumor" / "img_004.jpg", train / PATIENT_NAMES["cross_label"])
    source = np.asarray(Image.open(train / "no_tumor" / "img_005.jpg").convert("RGB"))
    (test / PATIENT_NAMES["twin"]).write_bytes(jpeg_bytes(source, quality=80))
    dev = tmp_path / "data" / "dev"  # a development folder with the same patient-named files
    shutil.copytree(test, dev)
    out = tmp_path / "run"
    argv = [
        "train",
        "--data",
        str(train),
        "--test",
        str(test),
        "--model-dir",
        str(out / "model"),
        "--work-dir",
        str(out / "work"),
        "--report-dir",
        str(out / "report"),
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
        "0,1",
        "--dev-dir",
        str(dev),
        "--no-progress",
    ]
    assert main(argv) == 0
    version = out / "model" / "1"
    names = {p.relative_to(root).as_posix() for root in (train, test, dev) for p in root.rglob("*") if p.is_file()}
    needles = names | {n.rsplit("/", 1)[1] for n in names} | {n.rsplit("/", 1)[1].rsplit(".", 1)[0] for n in names}
    needles |= {"Doe_Jane", "Roe_Richard", "Poe_Edgar", "Moe_Anna"}
    files = [p for p in version.rglob("*") if p.is_file()]
    assert any(p.name == "metadata.json" for p in files)
    for path in files:
        text = path.read_bytes().decode("utf-8", errors="ignore")
        found = sorted(n for n in needles if n in text)
        assert not found, f"{path.relative_to(version)} names {found}"
    meta = json.loads((version / "metadata.json").read_text())
    assert meta["data"]["skipped_files"]["count"] == 2
    assert meta["data"]["deduplication"]["cross_label_groups"] == 2
    twins = meta["data"]["test_twins"]
    assert twins["with_twin_in_training"] == len(synthetic_dataset.test_twins) + 1
    assert len(twins["pixel_hashes"]) == twins["with_twin_in_training"]
    # the names are in the training report, outside the model
    report = (out / "report" / "training_data.json").read_text()
    assert all(name in report for name in PATIENT_NAMES.values())
    # and the evaluation right after training found the twins from the metadata's hashes alone
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert metrics["twin_source"].startswith("the model's metadata")
    assert metrics["deduplication"]["dropped_with_a_training_twin"] == twins["with_twin_in_training"]
