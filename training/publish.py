"""``mri-classifier publish``: add a trained model to a model store as its next version, atomically.

The version folder is copied into a hidden temporary folder *inside* the store (same file system), its
``metadata.json`` is given the new number, and the folder is renamed to that number in one step. A service
watching the store (``MRI_MODEL_POLL_INTERVAL_S``) only looks at numbered folders, so it never sees a partial
copy; it loads and warms the new version, then swaps it in. Two publishers racing for the same number: the
rename of the second fails and it takes the next number.

Rolling back is one step: remove (or rename to a name that is not a number) the newest folder, e.g.
``mv models/mri-classifier/4 models/mri-classifier/retired-4``; the service goes back to the highest version
left. ``MRI_MODEL_VERSION=3`` pins a version instead.

    mri-classifier publish --model runs/model/1 --store models/mri-classifier
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from service.inference.runtime import ModelLoadError
from service.inference.versions import METADATA_FILE, is_saved_model, next_version

ATTEMPTS = 20


def _copy_file(src: str, dst: str) -> object:
    return shutil.copy2(src, dst)


def publish(model: Path, store: Path) -> Path:
    """Copy the version folder ``model`` into ``store`` as its next free version; returns the new folder."""
    from service.inference.classifier import read_metadata

    model, store = Path(model), Path(store)
    if not is_saved_model(model):
        raise FileNotFoundError(f"{model} is not a model version folder (no saved_model.pb)")
    read_metadata(model)  # the classes and preprocessing the service checks, before anything is copied
    store.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".publish-", dir=store))
    try:
        staged = tmp / "model"
        shutil.copytree(model, staged, copy_function=_copy_file)
        for _ in range(ATTEMPTS):
            version = next_version(store)
            _stamp(staged, version)
            try:
                os.rename(staged, store / str(version))  # atomic; fails if another publisher took the number
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST) and (store / str(version)).exists():
                    continue
                raise
            return store / str(version)
        raise RuntimeError(f"no free version number in {store} after {ATTEMPTS} attempts")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _stamp(version_dir: Path, version: int) -> None:
    """Write the version number into the copy's metadata (the service reads the folder's name anyway)."""
    path = version_dir / METADATA_FILE
    metadata = json.loads(path.read_text())
    metadata["version"] = version
    path.write_text(json.dumps(metadata, indent=2, sort_keys=True))


def run(argv: list[str]) -> int:
    """Entry point of ``mri-classifier publish``."""
    p = argparse.ArgumentParser(prog="mri-classifier publish", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, type=Path, help="the version folder to publish (e.g. runs/model/1)")
    p.add_argument("--store", required=True, type=Path, help="the model store (e.g. models/mri-classifier)")
    args = p.parse_args(argv)
    try:
        new = publish(args.model, args.store)
    except (FileNotFoundError, ModelLoadError) as exc:
        sys.stderr.write(f"mri-classifier publish: {exc}\n")
        return 1
    sys.stdout.write(json.dumps({"model": str(new), "version": int(new.name)}) + "\n")
    return 0
