"""Re-export a shipped model version with the "unlike the training images" output (``training.ood_score``).

The version's weights are recovered from its SavedModel by variable name into the Keras model its metadata
describes, the training split is re-created exactly as training made it (same de-duplication threshold,
validation fraction and seed, checked against the counts in the metadata), its penultimate embeddings become
the score's bank, and the model is exported again as a new version with the same temperature and metadata.
The probabilities of the new version are compared with the old one's on the validation split and the largest
difference is stored in the metadata (``derived_from``).

    python -m training.reexport --model models/mri-classifier/2 --data ../shared/data/brain-tumor-mri/Training
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from service.imaging.preprocessing import PreprocessConfig

log = logging.getLogger("training.reexport")
DROPPED_KEYS = ("version", "temperature", "signatures", "derived_from")


def restore_weights(model: Any, version_dir: Path) -> int:
    """Assign every weight of ``model`` from the SavedModel's variable of the same path; returns how many."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(version_dir))  # kept alive while its variables are read
    saved = {v.name.removesuffix(":0"): v for v in loaded.signatures["serving_default"].variables}
    missing = [w.path for w in model.weights if w.path not in saved or tuple(saved[w.path].shape) != tuple(w.shape)]
    if missing:
        raise ValueError(f"{len(missing)} weights not found in {version_dir} (first: {missing[:3]})")
    for w in model.weights:
        w.assign(saved[w.path].numpy())
    return len(model.weights)


def recreate_split(data: Path, metadata: dict[str, Any], config: PreprocessConfig) -> tuple[Any, Any, Any]:
    """(loaded images, train indices, validation indices) of the training folder, as the model's run made them."""
    from training import data as ds

    training = metadata.get("training", {})
    samples, skipped = ds.scan_folder(data)
    loaded = ds.load_images(samples, config, skipped, progress=False, desc="training folder")
    dedup = ds.deduplicate(loaded, float(training.get("near_threshold", ds.NEAR_THRESHOLD)))
    train_idx, val_idx = ds.stratified_split(
        dedup.keep, loaded.labels, float(training.get("val_fraction", 0.2)), int(training.get("seed", 42))
    )
    expected = metadata.get("data", {}).get("split", {})
    if expected and (expected.get("train"), expected.get("val")) != (len(train_idx), len(val_idx)):
        raise ValueError(f"re-created split {len(train_idx)}/{len(val_idx)} differs from the model's {expected}")
    return loaded, train_idx, val_idx


def _probabilities(version_dir: Path, images: np.ndarray) -> np.ndarray:
    from training.evaluate import predict_saved_model

    return predict_saved_model(version_dir, images, progress=False)


def reexport(source: Path, data: Path, model_dir: Path, version: int | None, k: int) -> Path:
    """Export ``source`` again under ``model_dir`` with the ``ood_score`` output; returns the new version folder."""
    from training.export import METADATA_FILE, export_model
    from training.model import build_model
    from training.ood_score import DEFAULT_K, embed

    metadata = json.loads((source / METADATA_FILE).read_text())
    config = PreprocessConfig.from_dict(metadata["preprocessing"])
    arch = metadata.get("architecture", {})
    model = build_model(config.image_size, "none", arch.get("backbone", "efficientnet_lite0"), arch.get("dropout", 0.3))
    log.info("restored %d weights from %s", restore_weights(model, source), source)
    loaded, train_idx, val_idx = recreate_split(data, metadata, config)
    bank = embed(model, loaded.images[train_idx])
    kept = {key: value for key, value in metadata.items() if key not in DROPPED_KEYS}
    fitted_on = f"training split ({len(train_idx)} images, de-duplicated, seed {metadata['training'].get('seed', 42)})"
    new = export_model(
        model, model_dir, kept, float(metadata.get("temperature", 1.0)), version, bank, k or DEFAULT_K, fitted_on
    )
    val = loaded.images[val_idx]
    diff = float(np.abs(_probabilities(new, val) - _probabilities(source, val)).max())
    meta_path = new / METADATA_FILE
    meta = json.loads(meta_path.read_text())
    meta["derived_from"] = {
        "version": int(metadata.get("version", 0)),
        "change": "same weights and temperature; serving_default also returns ood_score",
        "max_abs_diff_probabilities": diff,
        "compared_on": f"{len(val_idx)} validation images",
    }
    tmp = meta_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
    os.replace(tmp, meta_path)
    log.info("exported %s; max |diff| of probabilities against version %s: %.2e", new, source.name, diff)
    return new


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="the version folder to re-export")
    parser.add_argument("--data", type=Path, required=True, help="the training folder the model was trained on")
    parser.add_argument("--model-dir", type=Path, default=None, help="where to write (default: beside --model)")
    parser.add_argument("--version", type=int, default=None, help="default: the next free version")
    parser.add_argument("--k", type=int, default=0, help="neighbours for the score (default 10)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    new = reexport(args.model, args.data, args.model_dir or args.model.parent, args.version, args.k)
    sys.stdout.write(json.dumps({"model": str(new)}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(sys.argv[1:]))
