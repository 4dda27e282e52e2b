"""Dataset listing, duplicate finding, splitting and class weights."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from service.imaging.preprocessing import PreprocessConfig, decode_pixels, preprocess
from service.labels import CLASSES
from training.data import (
    DatasetError,
    Sample,
    class_weights,
    deduplicate,
    find_twins,
    fingerprint,
    load_images,
    scan_folder,
    stratified_split,
    without_file_names,
)

CFG = PreprocessConfig(image_size=32)


@pytest.fixture(scope="module")
def loaded(synthetic_dataset):
    samples, skipped = scan_folder(synthetic_dataset.train)
    return load_images(samples, CFG, skipped, progress=False)


def test_scan_maps_folder_aliases_to_canonical_classes(synthetic_dataset):
    samples, skipped = scan_folder(synthetic_dataset.train)
    assert {s.class_name for s in samples} == set(CLASSES)
    assert skipped == []
    assert samples == sorted(samples, key=lambda s: (s.rel.split("/")[0], s.rel))


def test_unknown_class_folder_is_a_clear_error(tmp_path, synthetic_dataset):
    root = tmp_path / "data"
    shutil.copytree(synthetic_dataset.train, root)
    (root / "astrocytoma").mkdir()
    with pytest.raises(DatasetError, match="astrocytoma"):
        scan_folder(root)


def test_empty_class_is_an_error_for_training_but_not_for_testing(tmp_path, synthetic_dataset):
    root = tmp_path / "data"
    shutil.copytree(synthetic_dataset.train, root)
    shutil.rmtree(root / "pituitary_tumor")
    with pytest.raises(DatasetError, match="pituitary"):
        scan_folder(root)
    samples, _ = scan_folder(root, require_all_classes=False)
    assert {s.class_name for s in samples} == {"glioma", "meningioma", "no_tumor"}


def test_two_folders_for_one_class_is_an_error(tmp_path, synthetic_dataset):
    root = tmp_path / "data"
    shutil.copytree(synthetic_dataset.train, root)
    shutil.copytree(root / "no_tumor", root / "notumor")
    with pytest.raises(DatasetError, match="both mean class 'no_tumor'"):
        scan_folder(root)


def test_unreadable_and_non_image_files_are_counted_not_silently_dropped(tmp_path, synthetic_dataset):
    root = tmp_path / "data"
    shutil.copytree(synthetic_dataset.train, root)
    (root / "glioma_tumor" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (root / "glioma_tumor" / "notes.txt").write_text("hello")
    (root / "glioma_tumor" / "IM000001").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)  # a PACS export's name
    samples, skipped = scan_folder(root)
    assert ("glioma_tumor/notes.txt", "not an image file (.txt)") in skipped
    reason = "DICOM file without a .dcm extension (no suffix): rename it to *.dcm"
    assert ("glioma_tumor/IM000001", reason) in skipped
    assert without_file_names({"skipped_files": [{"file": f, "reason": r} for f, r in skipped]})["skipped_files"] == {
        "count": 2,
        "reasons": {reason: 1, "not an image file (.txt)": 1},
    }
    data = load_images(samples, CFG, skipped, progress=False)
    reasons = dict(data.skipped)
    assert "glioma_tumor/broken.jpg" in reasons and "glioma_tumor/notes.txt" in reasons
    assert len(data.samples) == len(samples) - 1


def test_duplicate_finder_groups_planted_copies_and_nothing_else(loaded, synthetic_dataset):
    result = deduplicate(loaded)
    index = {s.rel: i for i, s in enumerate(loaded.samples)}
    for a, b in synthetic_dataset.exact_copies + synthetic_dataset.near_copies:
        assert result.groups[index[a]] == result.groups[index[b]], (a, b)
    assert result.exact_copies == len(synthetic_dataset.exact_copies)
    assert result.near_copies == len(synthetic_dataset.near_copies)
    # the cross-label pair is reported and dropped, both members
    assert len(result.conflicts) == 1
    files = {m["file"] for m in result.conflicts[0]["members"]}
    assert files == set(synthetic_dataset.cross_label[0])
    kept = {loaded.samples[i].rel for i in result.keep}
    assert not files & kept
    # every other image is its own group
    n_groups = len(set(result.groups.tolist()))
    planted = len(synthetic_dataset.exact_copies) + len(synthetic_dataset.near_copies) + 1
    assert n_groups == len(loaded.samples) - planted


def test_split_is_stratified_reproducible_and_never_straddles_a_group(loaded):
    result = deduplicate(loaded)
    labels = loaded.labels
    train_a, val_a = stratified_split(result.keep, labels, 0.2, seed=7)
    train_b, val_b = stratified_split(result.keep, labels, 0.2, seed=7)
    assert np.array_equal(train_a, train_b) and np.array_equal(val_a, val_b)
    assert not set(train_a) & set(val_a)
    assert set(result.groups[train_a]).isdisjoint(set(result.groups[val_a]))
    assert abs(len(val_a) / len(result.keep) - 0.2) < 0.05
    for c in range(len(CLASSES)):
        assert (labels[val_a] == c).sum() >= 1


def test_test_twins_are_found(loaded, synthetic_dataset):
    samples, skipped = scan_folder(synthetic_dataset.test, require_all_classes=False)
    test = load_images(samples, CFG, skipped, progress=False)
    twins = find_twins(test, loaded)
    assert sorted(s.rel for s, t in zip(test.samples, twins, strict=True) if t) == sorted(synthetic_dataset.test_twins)


def test_class_weights_are_n_over_k_times_n_c():
    labels = np.array([0] * 10 + [1] * 30 + [2] * 20 + [3] * 40)
    weights = class_weights(labels)
    assert weights == pytest.approx({0: 100 / 40, 1: 100 / 120, 2: 100 / 80, 3: 100 / 160})
    assert sum(weights[c] * (labels == c).sum() for c in range(4)) == pytest.approx(len(labels))


def test_fingerprint_changes_with_the_file_list(tmp_path, synthetic_dataset):
    root = tmp_path / "data"
    shutil.copytree(synthetic_dataset.train, root)
    before = fingerprint(scan_folder(root)[0])
    assert before == fingerprint(scan_folder(root)[0])
    Path(root / "no_tumor" / "img_000.jpg").unlink()
    assert fingerprint(scan_folder(root)[0]) != before


def test_training_inputs_are_the_services_for_large_and_small_jpegs(tmp_path):
    """A large JPEG is decoded at reduced scale by the service; training decodes it the same way, so the model
    input it trains on is the service's, bit for bit."""
    from PIL import Image

    from tests.synthetic import mri_like

    config = PreprocessConfig(image_size=32, crop_brain=True)
    samples = []
    for side in (48, 600):
        path = tmp_path / f"{side}.jpg"
        Image.fromarray(mri_like(2, np.random.default_rng(side), side)).save(path, quality=90)
        samples.append(Sample(path, 2, f"pituitary/{path.name}"))
    loaded = load_images(samples, config, progress=False)
    for sample, image in zip(samples, loaded.images, strict=True):
        assert np.array_equal(image, preprocess(sample.path.read_bytes(), config))
    assert decode_pixels(samples[1].path.read_bytes()).shape[:2] == (600, 600)  # what a full decode would give
