"""``mri-classifier predict PATHS... --out predictions.csv``: score image files without a server.

Files and folders (searched recursively; hidden files are left out) go through exactly what the service runs:
the model is found, checked and loaded by ``service.inference.classifier.load_model`` with the service's ``Settings``
(``MRI_*`` variables and the options below), images are decoded by ``service.imaging.preprocessing.preprocess``
(JPEG, PNG, DICOM, format sniffed from the bytes), batched up to the runtime's batch size and checked by the
warning of ``checks.input_check`` (not an MRI, unsure, unlike the training images: the model's ``ood_score``). One CSV
row per file: the probabilities, the label, the warning, or why the file was skipped. The exit status is 1
only when nothing could be scored.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import numpy as np

from service.checks import input_check
from service.config import RuntimeName, Settings
from service.errors import ServiceError
from service.imaging.preprocessing import preprocess
from service.inference.runtime import OOD_OUTPUT, OUTPUT_NAME
from service.labels import CLASSES

log = logging.getLogger("training.predict")

COLUMNS = (
    "file",
    "label",
    "confidence",
    *(f"p_{name}" for name in CLASSES),
    "likely_mri",
    "warning",
    "reasons",
    "ood_score",
    "skipped",
)


@dataclass(frozen=True)
class Row:
    """One file's outcome: scored (probabilities and check) or skipped (a reason)."""

    file: str
    probabilities: np.ndarray | None = None
    check: input_check.Check | None = None
    skipped: str = ""

    def to_csv(self) -> dict[str, Any]:
        row: dict[str, Any] = dict.fromkeys(COLUMNS, "")
        row["file"], row["skipped"] = self.file, self.skipped
        if self.probabilities is not None and self.check is not None:
            top = int(np.argmax(self.probabilities))
            row["label"], row["confidence"] = CLASSES[top], f"{self.probabilities[top]:.6f}"
            row.update({f"p_{name}": f"{p:.6f}" for name, p in zip(CLASSES, self.probabilities, strict=True)})
            row["likely_mri"], row["warning"] = self.check.likely_mri, self.check.warning
            row["reasons"] = ";".join(self.check.reasons)
            row["ood_score"] = "" if self.check.ood_score is None else f"{self.check.ood_score:.6f}"
        return row


def find_files(paths: Sequence[Path]) -> Iterator[tuple[Path, str]]:
    """(file, skip reason or "") for every path: files as given, folders recursively in sorted order."""
    for path in paths:
        if path.is_dir():
            for found in sorted(path.rglob("*")):
                hidden = any(part.startswith(".") for part in found.relative_to(path).parts)
                if found.is_file() and not hidden:
                    yield found, ""
        elif path.is_file():
            yield path, ""
        else:
            yield path, "no such file or folder"


def _decode(path: Path, settings: Settings, config: Any) -> np.ndarray | str:
    """The model input of one file, or why it cannot be scored."""
    try:
        return preprocess(path.read_bytes(), config, settings.max_pixels)
    except ServiceError as exc:
        return exc.reason
    except OSError as exc:
        return f"unreadable: {exc.strerror or type(exc).__name__}"


def predict_files(
    paths: Sequence[Path], settings: Settings, batch_size: int | None = None, progress: bool = True
) -> Iterator[Row]:
    """Load the model as the service does and yield one :class:`Row` per file, in order."""
    from tqdm import tqdm

    from service.inference.classifier import load_model

    if "inference_streams" not in settings.model_fields_set:  # one caller: every thread on each batch
        settings = settings.model_copy(update={"inference_streams": 1})
    model = load_model(settings)
    thresholds = input_check.thresholds(model.metadata, settings)
    size = batch_size or settings.max_batch_size
    files = list(find_files(paths))
    log.info(
        "scoring %d files with %s version %d on %s", len(files), model.info.name, model.info.version, model.info.runtime
    )
    with (
        ThreadPoolExecutor(max_workers=settings.max_concurrent_decodes) as pool,
        tqdm(total=len(files), unit="file", disable=not progress, file=sys.stderr) as bar,
    ):
        for start in range(0, len(files), size):
            chunk = files[start : start + size]
            decoded = list(pool.map(lambda item: item[1] or _decode(item[0], settings, model.preprocess), chunk))
            good = [i for i, value in enumerate(decoded) if isinstance(value, np.ndarray)]
            results: dict[int, Row] = {}
            if good:
                images = np.stack([decoded[i] for i in good])
                rows = model.infer(images)  # probabilities and, for models that export it, the ood_score
                probs = np.asarray(rows[OUTPUT_NAME])
                checks = input_check.check(images, probs, thresholds, np.asarray(rows[OOD_OUTPUT]))
                for i, p, check in zip(good, probs, checks, strict=True):
                    results[i] = Row(str(chunk[i][0]), p, check)
            for i, (path, _) in enumerate(chunk):
                yield results.get(i) or Row(str(path), skipped=str(decoded[i]))
            bar.update(len(chunk))


def write_csv(rows: Iterator[Row], out: Path) -> tuple[int, int]:
    """Write the rows to ``out`` (via a temporary file, renamed at the end); returns (scored, skipped)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    scored = skipped = 0
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(row.to_csv())
            scored, skipped = (scored + 1, skipped) if not row.skipped else (scored, skipped + 1)
    tmp.replace(out)
    return scored, skipped


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mri-classifier predict", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="image files (JPEG, PNG, DICOM) and folders")
    parser.add_argument("--out", type=Path, default=Path("predictions.csv"), help="CSV file to write")
    parser.add_argument("--model-dir", type=Path, help="model folder (default: MRI_MODEL_DIR, else /opt/ml/model)")
    parser.add_argument("--model-version", type=int, help="score with this version instead of the newest")
    parser.add_argument("--runtime", choices=get_args(RuntimeName), help="default: MRI_RUNTIME, else auto")
    parser.add_argument("--batch-size", type=int, help="images per inference (default: MRI_MAX_BATCH_SIZE)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    return parser


def run(argv: list[str]) -> int:
    """Entry point of ``mri-classifier predict``."""
    from service.inference.runtime import ModelLoadError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides: dict[str, Any] = {"warmup": False}
    for key in ("model_dir", "model_version", "runtime"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if args.batch_size is not None and args.batch_size < 1:
        sys.stderr.write("mri-classifier predict: --batch-size must be at least 1\n")
        return 2
    settings = Settings(**overrides)
    try:
        scored, skipped = write_csv(predict_files(args.paths, settings, args.batch_size, args.progress), args.out)
    except ModelLoadError as exc:
        sys.stderr.write(f"mri-classifier predict: model not loaded: {exc.reason}\n")
        return 1
    sys.stderr.write(f"mri-classifier predict: {scored} scored, {skipped} skipped -> {args.out}\n")
    return 0 if scored else 1
