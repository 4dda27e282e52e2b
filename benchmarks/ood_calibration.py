"""Calibrate the warning of a model's answers (``service/checks/input_check.py``) and measure how well it works.

Two jobs, two kinds of evidence:

* **Not an MRI** (colour, bright background, low top probability): in-distribution are brain MRI slices of
  the model's validation split, re-created exactly as training made it (``training.data``: same
  de-duplication threshold, validation fraction and seed, read from the model's metadata; or the ``val`` list
  of the run's ``split.json`` with ``--split-file``) and, with ``--external-dev``, the slices of another
  collection (they are MRI slices too, from other scanners); out-of-distribution are the photos that
  scikit-image ships in its wheel (no download), crops and grayscale versions of them, and generated
  documents. For each statistic it prints the AUROC (MRI vs non-MRI) and the false-accept rate at 95 %
  true-accept, and picks the three thresholds jointly: the lowest false-accept rate whose true-accept rate on
  the MRI slices is at least ``--target-tar``.
* **Likely wrong / unlike the training images** (the model's own ``ood_score`` output, ``training.ood_score``):
  its threshold is the lowest that keeps at most ``--max-warned`` of the *correct* answers warned (by any
  check) on the validation split and on ``--external-dev``. It then reports the three warning figures on each
  labelled set: the error-detection AUROC of the answer's score (wrong answers should score higher), the share
  of correct answers warned and the share of wrong answers warned, with 95 % intervals (bootstrap for the
  AUROC, Wilson for the shares). ``--test-folder`` adds the same figures on a test folder's images with no
  near twin in the training folder (``--twin-threshold``); that set is reported, never used to choose.

The calibration itself is ``training.ood_thresholds`` (the training job's ``thresholds`` stage runs it on every
model it makes); this script runs it on a published model, on the validation split re-created from the
model's metadata, and adds the figures on a test folder. With ``--write`` the thresholds and figures go into
the model's ``metadata.json`` (key ``"ood"``), where the service reads them.

    nice -n 10 .venv/bin/python benchmarks/ood_calibration.py --model-dir models/mri-classifier \\
        --data ../shared/data/brain-tumor-mri --external-dev ../shared/data/external-dev \\
        [--test-folder ../shared/data/brain-tumor-mri/Testing] [--write]

The non-MRI thresholds are chosen on the same non-MRI images the false-accept rate is measured on (there are
few), so that figure is optimistic; the share of correct answers warned on external-dev is measured on the set
its threshold was chosen on (the kept-aside half of that collection is the honest check).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.config import Settings
from service.imaging.preprocessing import PreprocessConfig
from service.inference.classifier import load_model
from service.inference.versions import find_version_dir
from training.ood_thresholds import Collection, answers, calibrate, labelled_folder, warning_figures, write_metadata


def mri_images(
    data_root: Path, split: str, metadata: dict[str, Any], config: PreprocessConfig, split_file: Path | None
) -> Collection:
    """The in-distribution set with labels: the validation split (re-created as training made it) or the test
    folder."""
    from training import data as ds

    if split == "test":
        return labelled_folder(data_root / "Testing", "MRI (test)", config)
    samples, skipped = ds.scan_folder(data_root / "Training")
    if split_file is not None:
        wanted = set(json.loads(split_file.read_text())["val"])
        samples = [s for s in samples if s.rel in wanted]
        loaded = ds.load_images(samples, config, skipped, progress=False, desc="validation")
        return Collection(list(loaded.images), ["MRI (validation)"] * len(loaded.samples), loaded.labels.tolist())
    training = metadata.get("training", {})
    loaded = ds.load_images(samples, config, skipped, progress=False, desc="training folder")
    dedup = ds.deduplicate(loaded, float(training.get("near_threshold", ds.NEAR_THRESHOLD)))
    _, val_idx = ds.stratified_split(
        dedup.keep, loaded.labels, float(training.get("val_fraction", 0.2)), int(training.get("seed", 42))
    )
    return Collection(
        [loaded.images[i] for i in val_idx], ["MRI (validation)"] * len(val_idx), loaded.labels[val_idx].tolist()
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="versioned model folder or one version")
    parser.add_argument("--version", type=int, default=None)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/brain-tumor-mri"))
    parser.add_argument("--split", choices=("val", "test"), default="val")
    parser.add_argument("--split-file", type=Path, default=None, help="the run's split.json (skips re-creating it)")
    parser.add_argument("--external-dev", type=Path, default=None, help="labelled slices of another collection")
    parser.add_argument("--test-folder", type=Path, default=None, help="report on its images with no training twin")
    parser.add_argument("--twin-threshold", type=float, default=0.95, help="thumbnail correlation of a near twin")
    parser.add_argument("--limit", type=int, default=0, help="at most this many MRI slices (0 = all)")
    parser.add_argument("--runtime", default="tensorflow", choices=("tensorflow", "openvino", "onnxruntime"))
    parser.add_argument("--target-tar", type=float, default=0.98, help="MRI slices of each set not flagged, at least")
    parser.add_argument("--max-warned", type=float, default=0.08, help="share of correct answers warned, at most")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    parser.add_argument("--write", action="store_true", help="store the thresholds in the model's metadata.json")
    args = parser.parse_args(argv)

    settings = Settings(
        _env_file=None,
        model_dir=args.model_dir,
        model_version=args.version,
        runtime=args.runtime,
        warmup=False,
        inference_streams=1,  # one caller: every thread on each batch
    )  # type: ignore[call-arg]
    version_dir = find_version_dir(args.model_dir, args.version)
    model = load_model(settings)
    config = model.preprocess
    print(
        f"model {model.info.name} version {model.info.version} ({version_dir}), {config.image_size} px, "
        f"{model.info.runtime} on {model.info.device}"
    )

    mri = mri_images(args.data, args.split, model.metadata, config, args.split_file)
    if args.limit and len(mri.images) > args.limit:
        keep = np.sort(np.random.default_rng(0).choice(len(mri.images), args.limit, replace=False))
        labels = mri.labels or []
        mri = Collection([mri.images[i] for i in keep], [mri.groups[i] for i in keep], [labels[i] for i in keep])
    labelled = {args.split if args.split == "test" else "validation": mri}
    if args.external_dev is not None:
        labelled["external-dev"] = labelled_folder(args.external_dev, "MRI (external-dev)", config)
    total = sum(len(c.images) for c in labelled.values())
    print(f"{total} MRI slices ({', '.join(labelled)}); calibrating against the non-MRI images")
    result = calibrate(model, labelled, args.target_tar, args.max_warned)
    section = result.section()
    thresholds = result.thresholds

    print(f"\n| non-MRI detection: score | AUROC | FAR at {args.target_tar:.0%} TAR |\n|---|---:|---:|")
    for label, figure in result.scores.items():
        print(f"| {label} | {figure['auroc']:.3f} | {figure['far_at_tar']:.3f} |")
    print(f"\nchosen thresholds: {thresholds.to_dict()}")
    print(
        f"image checks and confidence: true-accept (MRI not flagged, worst set) {result.true_accept:.3f}, "
        f"false-accept {result.false_accept:.3f}; with ood_score (at most {args.max_warned:.0%} of correct answers "
        f"warned): MRI not flagged (worst set) {result.mri_unflagged:.3f}, false-accept {result.other_accepted:.3f}"
    )
    print("\n| non-MRI group | images | flagged (all checks) |\n|---|---:|---:|")
    for group, figure in section["calibration"]["per_group_flagged"].items():
        print(f"| {group} | {figure['images']} | {figure['flagged']:.0%} |")

    warnings = dict(result.warnings)
    if args.test_folder is not None:  # reported, never used to choose
        name = "test, no training twin"
        test = labelled_folder(
            args.test_folder, "MRI (test, no twin)", config, args.data / "Training", args.twin_threshold
        )
        warnings[name] = warning_figures(answers(name, model, test), thresholds)
    print(
        "\n| set | images | wrong | error-detection AUROC (95% CI) | correct warned | wrong warned | "
        "AUROC 1-MSP | AUROC ood_score |\n|---|---:|---:|---|---:|---:|---:|---:|"
    )
    for name, f in warnings.items():
        if "error_auroc" not in f:
            continue
        parts = f["part_auroc"]
        print(
            f"| {name} | {f['images']} | {f['wrong']} | {f['error_auroc']:.3f} "
            f"[{f['error_auroc_ci95'][0]:.3f}, {f['error_auroc_ci95'][1]:.3f}] | "
            f"{f['correct_warned']:.1%} | {f['wrong_warned']:.1%} | "
            f"{parts.get('1 - max softmax probability', np.nan):.3f} | {parts.get('ood_score', np.nan):.3f} |"
        )
    section["calibration"]["warnings"] = warnings
    if args.json:
        args.json.write_text(json.dumps(section, indent=2))
    if args.write:
        print(f"\nwrote the thresholds to {write_metadata(version_dir, section)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
