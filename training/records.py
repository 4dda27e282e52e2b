"""Sharded TFRecord files of a de-duplicated, split dataset (``mri-classifier prepare`` writes, ``train`` reads).

Each example holds the preprocessed image (PNG of the model input, so decoding is lossless), its class index,
its duplicate group and its relative path. ``dataset.json`` beside the shards says how they were made and
which shard files make up each split: only those are read.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

MANIFEST = "dataset.json"
SHARD_NAME = re.compile(r"(train|val)-\d{5}-of-\d{5}\.tfrecord")


def _feature_bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _feature_int(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def write_shards(
    out_dir: Path,
    split: str,
    images: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    rels: list[str],
    shard_size: int = 256,
) -> list[str]:
    """Write ``split-XXXXX-of-YYYYY.tfrecord`` files; returns their names."""
    out_dir.mkdir(parents=True, exist_ok=True)
    count = max(1, math.ceil(len(images) / shard_size))
    names = []
    for shard in range(count):
        name = f"{split}-{shard:05d}-of-{count:05d}.tfrecord"
        names.append(name)
        with tf.io.TFRecordWriter(str(out_dir / name)) as writer:
            for i in range(shard * shard_size, min(len(images), (shard + 1) * shard_size)):
                example = tf.train.Example(
                    features=tf.train.Features(
                        feature={
                            "image": _feature_bytes(tf.io.encode_png(images[i]).numpy()),
                            "label": _feature_int(int(labels[i])),
                            "group": _feature_int(int(groups[i])),
                            "path": _feature_bytes(rels[i].encode()),
                        }
                    )
                )
                writer.write(example.SerializeToString())
    return names


def read_manifest(shard_dir: Path) -> dict[str, Any]:
    """The ``dataset.json`` written by ``prepare``."""
    return json.loads((shard_dir / MANIFEST).read_text())


def is_shard_dir(path: Path) -> bool:
    """True when ``path`` holds shards written by ``prepare``."""
    return (path / MANIFEST).is_file()


def load_split(shard_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read one split's shards into (images uint8, labels, groups).

    Exactly the shards the manifest lists are read (any other file in the folder is ignored), and their
    example count must be the one the manifest gives for the split.
    """
    manifest = read_manifest(shard_dir)
    names = manifest.get("shards", {}).get(split)
    if not names:
        raise FileNotFoundError(f"{shard_dir / MANIFEST} lists no {split} shards; run `mri-classifier prepare` again")
    files = [shard_dir / name for name in names]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{shard_dir}: {split} shards listed in {MANIFEST} are missing: {missing[:5]}")
    spec = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
        "group": tf.io.FixedLenFeature([], tf.int64),
        "path": tf.io.FixedLenFeature([], tf.string),
    }
    images, labels, groups = [], [], []
    for record in tf.data.TFRecordDataset([str(f) for f in files]):
        ex = tf.io.parse_single_example(record, spec)
        images.append(tf.io.decode_png(ex["image"], channels=3).numpy())
        labels.append(int(ex["label"]))
        groups.append(int(ex["group"]))
    expected = manifest.get("split", {}).get(split)
    if expected is not None and len(labels) != int(expected):
        raise ValueError(f"{shard_dir}: {split} shards hold {len(labels)} images, {MANIFEST} says {expected}")
    if not labels:
        raise ValueError(f"{shard_dir}: the {split} shards are empty")
    return np.stack(images), np.array(labels, dtype=np.int64), np.array(groups, dtype=np.int64)


def is_prepare_output(path: Path) -> bool:
    """True when every entry of ``path`` is something ``prepare`` writes (its manifest and shards)."""
    return all(p.is_file() and (p.name == MANIFEST or SHARD_NAME.fullmatch(p.name)) for p in path.iterdir())
