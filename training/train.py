"""``mri-classifier train``: the shipped recipe end to end, as resumable stages.

prepare (de-duplicate, split) -> finetune (the ImageNet backbone, fine-tuned) -> probe (a linear probe on the
frozen ImageNet features) -> mix (WiSE-FT: the weights of the two mixed, alpha chosen by a rule fixed in the
recipe) -> temperature (fitted on a held-out half of validation) -> ood_bank (the "unlike the training images"
score's neighbours) -> export (every signature) -> thresholds (the warning's) -> report -> publish (the next
version of ``--model-dir``, atomically). Every default is the recipe (``training/recipe.json``); each stage is
timed and recorded in ``--work-dir`` (:mod:`training.stages`), so ``--resume`` continues where a run stopped.

Started as ``train`` with no options inside a SageMaker training container, it follows the SageMaker
contract instead (see :mod:`training.sagemaker`).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import shutil
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from service.imaging.preprocessing import PreprocessConfig
from service.labels import CLASSES, NUM_CLASSES
from training.augment import AugmentConfig
from training.mix import RULES
from training.recipe import recipe
from training.stages import REDOABLE

log = logging.getLogger("training")

_RECIPE = recipe()
#: Options that say where and how to run, not what to train: never part of the recipe or the metadata.
#: ``--head-init``: where fine-tuning's head starts (``probe``: LP-FT, Kumar et al. 2022).
HEAD_INITS = ("random", "probe")
RUN_OPTIONS = ("data", "test", "dev_dir", "model_dir", "work_dir", "report_dir", "resume", "from_stage", "progress")


def _recipe_augment() -> AugmentConfig:
    return AugmentConfig(**{f.name: _RECIPE[f.name] for f in fields(AugmentConfig)})


@dataclass
class TrainConfig:
    """Everything that decides a training run; stored in the model's metadata. Defaults: the recipe."""

    data: str
    test: str | None = None
    dev_dir: str | None = None
    model_dir: str = "runs/model"
    work_dir: str = "runs/work"
    report_dir: str | None = None
    model_name: str = _RECIPE["model_name"]
    backbone: str = _RECIPE["backbone"]
    weights: str = _RECIPE["weights"]
    image_size: int = _RECIPE["image_size"]
    crop_brain: bool = _RECIPE["crop_brain"]
    epochs: int = _RECIPE["epochs"]
    head_init: str = _RECIPE["head_init"]
    freeze_epochs: int = _RECIPE["freeze_epochs"]
    batch_size: int = _RECIPE["batch_size"]
    learning_rate: float = _RECIPE["learning_rate"]
    fine_tune_learning_rate: float = _RECIPE["fine_tune_learning_rate"]
    fine_tune_from: str | None = _RECIPE["fine_tune_from"]
    label_smoothing: float = _RECIPE["label_smoothing"]
    dropout: float = _RECIPE["dropout"]
    val_fraction: float = _RECIPE["val_fraction"]
    near_threshold: float = _RECIPE["near_threshold"]
    seed: int = _RECIPE["seed"]
    early_stopping_patience: int = _RECIPE["early_stopping_patience"]
    reduce_lr_patience: int = _RECIPE["reduce_lr_patience"]
    mixed_precision: bool = _RECIPE["mixed_precision"]
    probe_c: tuple[float, ...] = tuple(_RECIPE["probe_c"])
    mix_alphas: tuple[float, ...] = tuple(_RECIPE["mix_alphas"])
    mix_rule: str = _RECIPE["mix_rule"]
    calibrate: bool = _RECIPE["calibrate"]
    ood_k: int = _RECIPE["ood_k"]
    target_true_accept: float = _RECIPE["target_true_accept"]
    max_correct_warned: float = _RECIPE["max_correct_warned"]
    resume: bool = False
    from_stage: str | None = None
    progress: bool = True
    augment: AugmentConfig = field(default_factory=_recipe_augment)

    @property
    def preprocessing(self) -> PreprocessConfig:
        return PreprocessConfig(image_size=self.image_size, crop_brain=self.crop_brain)

    def recipe_values(self) -> dict[str, Any]:
        """This run's values of the recipe's keys (what the metadata records as ``training``)."""
        values = {k: v for k, v in asdict(self).items() if k not in RUN_OPTIONS}
        return json.loads(json.dumps(values))

    def overrides(self) -> dict[str, Any]:
        """The recipe keys this run changed: ``{key: [the recipe's value, this run's]}``."""
        values = self.recipe_values()
        flat = {**{k: v for k, v in values.items() if k != "augment"}, **values["augment"]}
        return {k: [v, flat.get(k)] for k, v in _RECIPE.items() if flat.get(k) != v}


def _floats(text: str) -> tuple[float, ...]:
    """``"0.1,0.3"`` (a SageMaker hyperparameter is a string) -> ``(0.1, 0.3)``."""
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of ``mri-classifier train`` (SageMaker hyperparameters use the same names); every
    default comes from the recipe."""
    d = TrainConfig(data="")
    a = d.augment
    p = argparse.ArgumentParser(
        prog="mri-classifier train",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", required=True, help="image folder (one sub-folder per class) or `prepare` shards")
    p.add_argument("--test", help="held-out test folder, evaluated after export (never used to choose)")
    p.add_argument(
        "--dev-dir",
        help="labelled folder from another source (one sub-folder per class), used only to choose the mix's alpha "
        "and the warning thresholds; without it they are chosen on validation alone",
    )
    p.add_argument("--model-dir", default=d.model_dir, help="the model store: the model becomes its next version")
    p.add_argument("--work-dir", default=d.work_dir, help="checkpoints, stage results, the exported model, history")
    p.add_argument("--report-dir", help="evaluation report folder (default: <work-dir>/report)")
    p.add_argument("--model-name", default=d.model_name)
    p.add_argument("--backbone", default=d.backbone, choices=["efficientnet_b0", "efficientnet_lite0", "tiny"])
    p.add_argument(
        "--weights",
        default=d.weights,
        help="imagenet (Lite0: the file `make lite0-weights` writes to scratch/weights/, or the train image's "
        "/opt/mri-classifier/weights/; B0: Keras's download), none (random init, for tests) or a weights file",
    )
    p.add_argument("--image-size", type=int, default=d.image_size)
    p.add_argument("--crop-brain", action=argparse.BooleanOptionalAction, default=d.crop_brain)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument(
        "--head-init",
        choices=HEAD_INITS,
        default=d.head_init,
        help="the head fine-tuning starts from: random, or the linear probe on frozen features (LP-FT: the probe "
        "stage runs first)",
    )
    p.add_argument(
        "--freeze-epochs",
        type=int,
        default=d.freeze_epochs,
        help="epochs training only the head before fine-tuning (pretrained weights)",
    )
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--learning-rate", type=float, default=d.learning_rate)
    p.add_argument("--fine-tune-learning-rate", type=float, default=d.fine_tune_learning_rate)
    p.add_argument(
        "--fine-tune-from",
        default=d.fine_tune_from,
        help="fine-tune only from the first backbone layer whose name starts with this (e.g. block5a); "
        "earlier layers stay frozen (empty: the whole backbone)",
    )
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--dropout", type=float, default=d.dropout)
    p.add_argument("--val-fraction", type=float, default=d.val_fraction)
    p.add_argument("--near-threshold", type=float, default=d.near_threshold)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--early-stopping-patience", type=int, default=d.early_stopping_patience)
    p.add_argument("--reduce-lr-patience", type=int, default=d.reduce_lr_patience)
    p.add_argument(
        "--mixed-precision",
        action=argparse.BooleanOptionalAction,
        default=d.mixed_precision,
        help="float16 compute on GPUs",
    )
    p.add_argument(
        "--probe-c",
        type=_floats,
        default=d.probe_c,
        help="the linear probe's regularisation grid (comma-separated); chosen on validation accuracy",
    )
    p.add_argument(
        "--mix-alphas",
        type=_floats,
        default=d.mix_alphas,
        help="the WiSE-FT grid (comma-separated, must include 1 = the fine-tuned model; `1` alone: no probe, no mix)",
    )
    p.add_argument("--mix-rule", default=d.mix_rule, choices=sorted(RULES), help="how alpha is chosen")
    p.add_argument(
        "--calibrate",
        action=argparse.BooleanOptionalAction,
        default=d.calibrate,
        help="fit temperature scaling on a calibration half of the validation split (the other half measures "
        "it) and build it into the export",
    )
    p.add_argument("--ood-k", type=int, default=d.ood_k, help="neighbours of the 'unlike the training images' score")
    p.add_argument(
        "--target-true-accept",
        type=float,
        default=d.target_true_accept,
        help="warning thresholds: the share of MRI slices of each labelled set the image checks must pass",
    )
    p.add_argument(
        "--max-correct-warned",
        type=float,
        default=d.max_correct_warned,
        help="warning thresholds: the largest share of correct answers warned on each labelled set",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue in --work-dir: completed fine-tuning phases and stages are reused",
    )
    p.add_argument(
        "--from-stage",
        choices=REDOABLE,
        help="resume, but run this stage and every later one again",
    )
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    g = p.add_argument_group("augmentation (training data only)")
    g.add_argument("--flip-left-right", action=argparse.BooleanOptionalAction, default=a.flip_left_right)
    g.add_argument("--flip-up-down", action=argparse.BooleanOptionalAction, default=a.flip_up_down)
    for name in AugmentConfig.strengths():
        g.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(a, name))
    return p


def config_from_args(argv: list[str]) -> TrainConfig:
    """Parse ``argv`` into a :class:`TrainConfig` (``--from-stage`` implies ``--resume``)."""
    ns = vars(build_parser().parse_args(argv))
    aug_fields = set(AugmentConfig.__dataclass_fields__)
    augment = AugmentConfig(**{k: ns.pop(k) for k in list(ns) if k in aug_fields})
    ns["fine_tune_from"] = ns["fine_tune_from"] or None
    if ns["from_stage"]:
        ns["resume"] = True
    return TrainConfig(**ns, augment=augment)


def select_strategy(force_mirrored: bool = False) -> Any:
    """TensorFlow's own scale-out: MultiWorkerMirrored with ``TF_CONFIG``, Mirrored with several GPUs (or when
    forced, e.g. a one-device CPU mirror in tests), the default strategy otherwise."""
    import tensorflow as tf

    from training.sagemaker import tf_config_present

    if tf_config_present():
        from training.cluster import patch_keras_multi_worker

        patch_keras_multi_worker()  # Keras 3's fit cannot run multi-worker without it (keras-team/keras#20585)
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    if force_mirrored:
        devices = ["/gpu:0"] if gpus else ["/cpu:0"]
        return tf.distribute.MirroredStrategy(devices=devices)
    return tf.distribute.get_strategy()


@dataclass
class PreparedData:
    """Train/validation arrays plus what was learnt about the data on the way."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    info: dict[str, Any]  # counts, hashes and (for the training report only) file names
    preprocessing: PreprocessConfig = field(default_factory=PreprocessConfig)  # what made the images' pixels


def prepare_data(config: TrainConfig) -> PreparedData:
    """Read folders (or shards), de-duplicate, split; log the counts."""
    from training import data as ds
    from training.records import is_shard_dir, load_split, read_manifest

    source = Path(config.data)
    if is_shard_dir(source):
        manifest = read_manifest(source)
        if manifest["classes"] != list(CLASSES):
            raise ValueError(f"shards in {source} have classes {manifest['classes']}, expected {list(CLASSES)}")
        _check_shard_preprocessing(source, manifest["preprocessing"], config.preprocessing)
        tr_x, tr_y, _ = load_split(source, "train")
        va_x, va_y, _ = load_split(source, "val")
        kept = ("fingerprint", "deduplication", "skipped_files", "split", "test_twins")
        shard_info: dict[str, Any] = {k: manifest[k] for k in kept if k in manifest}
        shard_info["source"] = "tfrecord"
        shard_info["split_parameters"] = {
            "seed": manifest.get("seed"),
            "val_fraction": manifest.get("val_fraction"),
            "near_threshold": manifest.get("near_threshold"),
        }
        preprocessing = PreprocessConfig.from_dict(manifest["preprocessing"])
        return PreparedData(tr_x, tr_y, va_x, va_y, shard_info, preprocessing)
    samples, skipped = ds.scan_folder(source)
    loaded = ds.load_images(samples, config.preprocessing, skipped, progress=config.progress, desc="training data")
    dedup = ds.deduplicate(loaded, config.near_threshold)
    labels = loaded.labels
    train_idx, val_idx = ds.stratified_split(dedup.keep, labels, config.val_fraction, config.seed)
    report = dedup.report(loaded.samples)
    info: dict[str, Any] = {
        "source": "folder",
        "fingerprint": ds.fingerprint(samples),
        "split_parameters": {
            "seed": config.seed,
            "val_fraction": config.val_fraction,
            "near_threshold": config.near_threshold,
        },
        "deduplication": report,
        "skipped_files": [{"file": f, "reason": r} for f, r in loaded.skipped],
        "split": {
            "train": len(train_idx),
            "val": len(val_idx),
            "train_per_class": _per_class(labels[train_idx]),
            "val_per_class": _per_class(labels[val_idx]),
        },
    }
    if config.test:
        test_samples, test_skipped = ds.scan_folder(config.test, require_all_classes=False)
        test = ds.load_images(
            test_samples, config.preprocessing, test_skipped, progress=config.progress, desc="test data"
        )
        twins = ds.find_twins(test, loaded, config.near_threshold)
        info["test_twins"] = {
            "folder_fingerprint": ds.fingerprint(test_samples),
            "images": len(test.samples),
            "with_twin_in_training": int(sum(twins)),
            "per_class": {
                CLASSES[c]: int(sum(t for t, s in zip(twins, test.samples, strict=True) if s.label == c))
                for c in range(NUM_CLASSES)
            },
            "files": [s.rel for s, t in zip(test.samples, twins, strict=True) if t],
            "pixel_hashes": sorted({h for h, t in zip(test.pixel_hashes, twins, strict=True) if t}),
        }
    _log_data_counts(info, len(samples))
    split_file = Path(config.work_dir) / "split.json"
    split_file.parent.mkdir(parents=True, exist_ok=True)
    split_file.write_text(
        json.dumps(
            {
                "train": [loaded.samples[i].rel for i in train_idx.tolist()],
                "val": [loaded.samples[i].rel for i in val_idx.tolist()],
                "groups": {s.rel: int(g) for s, g in zip(loaded.samples, dedup.groups.tolist(), strict=True)},
            },
            indent=1,
        )
    )
    return PreparedData(
        loaded.images[train_idx], labels[train_idx], loaded.images[val_idx], labels[val_idx], info, config.preprocessing
    )


def _check_shard_preprocessing(source: Path, stored: dict[str, Any], wanted: PreprocessConfig) -> None:
    """Refuse shards whose pixels were made another way than this run's options say (size, brain crop...)."""
    asked = wanted.to_dict()
    differ = sorted(k for k in set(stored) | set(asked) if stored.get(k) != asked.get(k))
    if not differ:
        return
    made = PreprocessConfig.from_dict(stored)
    flags = f"--image-size {made.image_size} {'--crop-brain' if made.crop_brain else '--no-crop-brain'}"
    if set(differ) <= {"image_size", "crop_brain"}:
        hint = f"train with {flags}"
    else:  # no option of `train` can ask for it
        hint = "run `mri-classifier prepare` again: training cannot reproduce their preprocessing"
    details = ", ".join(f"{k} {stored.get(k)!r} (asked: {asked.get(k)!r})" for k in differ)
    raise ValueError(f"shards in {source} were prepared with {details}; {hint}")


def _per_class(labels: np.ndarray) -> dict[str, int]:
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    return {name: int(counts[i]) for i, name in enumerate(CLASSES)}


def _log_data_counts(info: dict[str, Any], total: int) -> None:
    d = info["deduplication"]
    lines = [
        f"images found: {total}; skipped (unreadable or not images): {len(info['skipped_files'])}",
        f"duplicates: {d['exact_copies_removed']} exact and {d['near_copies_removed']} near copies removed, "
        f"{d['cross_label_groups']} cross-label groups ({d['cross_label_images_dropped']} images) dropped; "
        f"{d['kept']} distinct images kept",
        f"split: train {info['split']['train']} {info['split']['train_per_class']}, "
        f"val {info['split']['val']} {info['split']['val_per_class']}",
    ]
    if "test_twins" in info:
        t = info["test_twins"]
        lines.append(
            f"test: {t['with_twin_in_training']} of {t['images']} images have a copy in training {t['per_class']}"
        )
    for line in lines:
        log.info(line)


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    weights: dict[int, float] | None,
    augment: AugmentConfig | None,
    seed: int,
    label_smoothing: float = 0.0,
) -> Any:
    """A batched tf.data pipeline of (float images, one-hot labels, sample weights); augmented when asked."""
    import tensorflow as tf

    from training.augment import make_augment_fn

    w = np.ones(len(labels), np.float32)
    if weights:
        w = np.array([weights[int(y)] for y in labels], np.float32)
    onehot = np.eye(NUM_CLASSES, dtype=np.float32)[labels]
    if label_smoothing:
        onehot = onehot * (1 - label_smoothing) + label_smoothing / NUM_CLASSES
    ds = tf.data.Dataset.from_tensor_slices((images, onehot, w))
    if augment is not None:
        ds = ds.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augment is not None:
        ds = ds.map(make_augment_fn(augment, seed), num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(lambda x, y, w: (tf.cast(x, tf.float32), y, w))
    return ds.prefetch(tf.data.AUTOTUNE)


def _read_history(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with path.open() as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def _first_trainable(layers: list[Any], prefix: str | None) -> int:
    """Index of the first backbone layer to fine-tune (0: all of them)."""
    if not prefix:
        return 0
    for i, layer in enumerate(layers):
        if layer.name.startswith(prefix):
            return i
    raise ValueError(f"--fine-tune-from {prefix!r}: no backbone layer has that name")


def training_phases(config: TrainConfig) -> list[tuple[str, int, float, bool]]:
    """(name, epochs, learning rate, backbone trainable) for each training phase. A head that starts from the
    probe (LP-FT) is fine-tuned at the fine-tuning rate, with or without head epochs before."""
    if config.head_init == "probe":
        head = [("head", config.freeze_epochs, config.learning_rate, False)] if config.freeze_epochs > 0 else []
        return [*head, ("finetune", config.epochs, config.fine_tune_learning_rate, True)]
    if config.freeze_epochs > 0:
        return [
            ("head", config.freeze_epochs, config.learning_rate, False),
            ("finetune", config.epochs, config.fine_tune_learning_rate, True),
        ]
    return [("train", config.epochs, config.learning_rate, True)]


def fit(
    config: TrainConfig, data: PreparedData, strategy: Any, head: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[Any, dict[str, list[float]]]:
    """Train through the phases with early stopping, LR reduction and per-epoch checkpoints (resumable),
    starting from ``head`` (the Dense kernel and bias: the linear probe, for LP-FT) when given."""
    import keras

    from training.data import class_weights
    from training.model import LOGITS_LAYER, backbone_layers, build_model

    work = Path(config.work_dir)
    if not config.resume and work.exists():
        for sub in ("backup", "phases", "history"):
            shutil.rmtree(work / sub, ignore_errors=True)
    (work / "phases").mkdir(parents=True, exist_ok=True)
    (work / "history").mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(config.seed)
    weights = class_weights(data.train_labels)
    log.info("class weights: %s", {CLASSES[k]: round(v, 3) for k, v in weights.items()})
    global_batch = config.batch_size * strategy.num_replicas_in_sync
    train_ds = make_dataset(
        data.train_images,
        data.train_labels,
        global_batch,
        weights,
        config.augment,
        config.seed,
        config.label_smoothing,
    )
    val_ds = make_dataset(data.val_images, data.val_labels, global_batch, None, None, config.seed)
    with strategy.scope():
        model = build_model(config.image_size, config.weights, config.backbone, config.dropout)
        if head is not None:
            model.get_layer(LOGITS_LAYER).set_weights([np.asarray(w, np.float32) for w in head])
    history: dict[str, list[float]] = {}
    for name, epochs, lr, trainable in training_phases(config):
        done = work / "phases" / f"{name}.weights.h5"
        layers = backbone_layers(model)
        start = _first_trainable(layers, config.fine_tune_from) if config.weights != "none" else 0
        for position, layer in enumerate(layers):
            # Pretrained BatchNorm statistics stay frozen while fine-tuning (standard transfer-learning practice).
            frozen_bn = isinstance(layer, keras.layers.BatchNormalization) and config.weights != "none"
            layer.trainable = trainable and not frozen_bn and position >= start
        with strategy.scope():
            model.compile(
                optimizer=keras.optimizers.Adam(lr),
                loss=keras.losses.CategoricalCrossentropy(),
                metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
            )
        hist_path = work / "history" / f"{name}.csv"
        if done.is_file():
            log.info("phase %s already complete; loading its weights", name)
            model.load_weights(done)
        else:
            # The history row is written before the epoch's backup, so a resumed run never loses a row.
            callbacks = [
                keras.callbacks.EarlyStopping(
                    monitor="val_loss",
                    patience=config.early_stopping_patience,
                    restore_best_weights=True,
                    verbose=1,
                ),
                keras.callbacks.ReduceLROnPlateau(
                    monitor="val_loss", patience=config.reduce_lr_patience, factor=0.2, min_lr=1e-6, verbose=1
                ),
                keras.callbacks.CSVLogger(str(hist_path), append=config.resume),
                keras.callbacks.BackupAndRestore(str(work / "backup" / name), save_freq="epoch"),
            ]
            log.info(
                "phase %s: %d epochs at learning rate %g (backbone %s)",
                name,
                epochs,
                lr,
                "trainable" if trainable else "frozen",
            )
            model.fit(
                train_ds,
                validation_data=val_ds,
                epochs=epochs,
                callbacks=callbacks,
                shuffle=False,
                verbose=1 if config.progress else 2,
            )
            model.save_weights(done)
        for row in _read_history(hist_path):
            for key, value in row.items():
                history.setdefault(key, []).append(value)
            history.setdefault("phase_index", []).append(float([p[0] for p in training_phases(config)].index(name)))
    return model, history


def validation_report(
    model: Any, data: PreparedData, batch_size: int, calibrate: bool, seed: int = 42
) -> tuple[float, dict]:
    """Fit the temperature on one half of the validation split; measure before/after on the other half.

    Both halves were seen by early stopping (which chose the epoch), so the accuracy is still mildly optimistic;
    the calibration error is not: the temperature never saw the images it is measured on.
    """
    import keras

    from training.metrics import calibration_split, classification_metrics, fit_temperature, softmax
    from training.model import LOGITS_LAYER

    logit_model = keras.Model(model.input, model.get_layer(LOGITS_LAYER).output)
    logits = logit_model.predict(data.val_images.astype(np.float32), batch_size=batch_size, verbose=0)
    logits = np.asarray(logits, dtype=np.float32)
    fit_idx, held_idx = calibration_split(data.val_labels, seed)
    held_out = not np.array_equal(fit_idx, held_idx)
    temperature = fit_temperature(logits[fit_idx], data.val_labels[fit_idx]) if calibrate else 1.0
    before = classification_metrics(softmax(logits[held_idx]), data.val_labels[held_idx])
    after = classification_metrics(softmax(logits[held_idx], temperature), data.val_labels[held_idx])
    return temperature, {
        "split": "validation (de-duplicated, stratified, fixed seed)",
        "epoch_chosen_on": f"the whole validation split (early stopping on val_loss, n={len(data.val_labels)})",
        "temperature_fitted_on": f"calibration half of the validation split (stratified, seed {seed}, n={len(fit_idx)})"
        if calibrate
        else "not fitted (--no-calibrate)",
        "metrics_measured_on": (
            f"held-out half of the validation split (n={len(held_idx)}), not used to fit the temperature"
            if held_out
            else f"the whole validation split (n={len(held_idx)}): too small to hold a half out"
        ),
        "temperature": temperature,
        "uncalibrated": before,
        "calibrated": after,
    }


def configure_logging() -> None:
    """Plain timestamped logs on stderr (no image content is ever logged)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
