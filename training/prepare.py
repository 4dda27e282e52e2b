"""``mri-classifier prepare``: de-duplicate and split an image folder into sharded TFRecord files.

``train --data SHARD_DIR`` then reads the shards (locally or from a mounted bucket) instead of the folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from service.labels import CLASSES


def run(argv: list[str]) -> int:
    """Entry point of ``mri-classifier prepare``."""
    from training.records import MANIFEST, write_shards
    from training.train import TrainConfig, configure_logging, prepare_data

    configure_logging()
    p = argparse.ArgumentParser(
        prog="mri-classifier prepare", description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--data", required=True, help="image folder, one sub-folder per class")
    p.add_argument("--test", help="test folder: its images with a copy in --data are listed in the manifest")
    p.add_argument(
        "--out", required=True, type=Path, help="new or empty folder, or one an earlier `prepare` wrote (replaced)"
    )
    d = TrainConfig(data="")  # the recipe's preprocessing and split
    p.add_argument("--image-size", type=int, default=d.image_size)
    p.add_argument("--crop-brain", action=argparse.BooleanOptionalAction, default=d.crop_brain)
    p.add_argument("--val-fraction", type=float, default=d.val_fraction)
    p.add_argument("--near-threshold", type=float, default=d.near_threshold)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--shard-size", type=int, default=256)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    a = p.parse_args(argv)
    out: Path = a.out
    _check_out(out)
    config = TrainConfig(
        data=a.data,
        test=a.test,
        work_dir=tempfile.mkdtemp(prefix="mri-prepare-"),  # split.json (file names) stays out of the shards
        image_size=a.image_size,
        crop_brain=a.crop_brain,
        val_fraction=a.val_fraction,
        near_threshold=a.near_threshold,
        seed=a.seed,
        progress=a.progress,
    )
    try:
        data = prepare_data(config)
    finally:
        shutil.rmtree(config.work_dir, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        shards = {}
        for split, images, labels in (
            ("train", data.train_images, data.train_labels),
            ("val", data.val_images, data.val_labels),
        ):
            groups = np.arange(len(labels))  # representatives only: one image per duplicate group
            rels = [f"{split}/{i}" for i in range(len(labels))]
            shards[split] = write_shards(tmp, split, images, labels, groups, rels, a.shard_size)
        manifest = {
            **data.info,
            "classes": list(CLASSES),
            "preprocessing": data.preprocessing.to_dict(),
            "seed": a.seed,
            "val_fraction": a.val_fraction,
            "near_threshold": a.near_threshold,
            "shards": shards,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        _replace(out, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logging.getLogger("training").info(
        "wrote %d train and %d val shards to %s", len(shards["train"]), len(shards["val"]), out
    )
    return 0


def _check_out(out: Path) -> None:
    """Refuse an output that is a file or a non-empty folder holding anything ``prepare`` did not write."""
    from training.records import is_prepare_output

    if out.exists() and (not out.is_dir() or not is_prepare_output(out)):
        raise ValueError(
            f"--out {out} exists and does not hold only `prepare` shards; give a new or empty folder "
            "(an earlier `prepare` output is replaced as a whole)"
        )


def _replace(out: Path, new: Path) -> None:
    """Put the folder ``new`` in the place of ``out``: an earlier output is removed whole, never merged."""
    _check_out(out)
    if out.exists():
        old = out.with_name(f".{out.name}.old-{new.name[-8:]}")
        os.replace(out, old)
        os.replace(new, out)
        shutil.rmtree(old)
    else:
        os.replace(new, out)
