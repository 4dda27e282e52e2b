"""``mri-classifier train``: the recipe's stages in order, each timed, recorded and resumable.

=============  ==========================================================================================
prepare        read, de-duplicate and split the data (``training.train.prepare_data``); the dev folder
finetune       fine-tune the ImageNet backbone (``training.train.fit``; its phases resume by themselves)
probe          a linear probe on the frozen ImageNet features (``training.probe``); before ``finetune`` with
               ``--head-init probe`` (LP-FT: fine-tuning starts from the probe's head)
mix            the WiSE-FT weight mix, alpha chosen by the recipe's rule (``training.mix``)
temperature    temperature scaling fitted on a held-out half of validation (``training.train.validation_report``)
ood_bank       the training split's embeddings, the "unlike the training images" score's bank
export         every signature, into ``<work-dir>/export/1`` (``training.export``)
thresholds     the warning thresholds (``training.ood_thresholds``), written into that export's metadata
report         the evaluation on ``--test`` and ``--dev-dir``, the training report (``training.report``)
publish        the model becomes the next version of ``--model-dir``, atomically (``training.publish``)
=============  ==========================================================================================

Outputs of each stage live in ``<work-dir>/stages`` (``training.stages``); ``--resume`` reuses every stage that
finished with the same options, ``--from-stage NAME`` runs ``NAME`` and the later stages again.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from service.labels import CLASSES, NUM_CLASSES
from training.mix import METHOD as MIX_METHOD
from training.mix import check_alphas
from training.recipe import resolve_weights
from training.stages import Progress, Stages, timed
from training.train import (
    PreparedData,
    TrainConfig,
    config_from_args,
    configure_logging,
    fit,
    prepare_data,
    select_strategy,
    training_phases,
    validation_report,
)

log = logging.getLogger("training")

EXPORT_DIR = "export"
INTENDED_USE = "research and decision-support demonstration; not a diagnostic device"


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shaped the model."""
    import keras
    import PIL
    import sklearn
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "scikit-learn": sklearn.__version__,
    }


class DevSet:
    """The optional labelled folder from another source (``--dev-dir``): images, labels and a description."""

    def __init__(self, folder: Path, config: TrainConfig) -> None:
        from training import data as ds

        samples, skipped = ds.scan_folder(folder, require_all_classes=False)
        loaded = ds.load_images(samples, config.preprocessing, skipped, progress=config.progress, desc="dev data")
        self.name = folder.name or "dev"
        self.images, self.labels = loaded.images, loaded.labels
        counts = np.bincount(self.labels, minlength=NUM_CLASSES)
        self.info = {
            "name": self.name,
            "images": len(self.labels),
            "per_class": {CLASSES[i]: int(counts[i]) for i in range(NUM_CLASSES)},
            "skipped_files": len(loaded.skipped),
            "fingerprint": ds.fingerprint(samples),
            "used_for": ["the alpha of the weight mix", "the warning thresholds"],
        }


def _plain_model(config: TrainConfig, weights_file: Path | None = None) -> Any:
    """The classifier outside any distribution strategy, with random weights or those of ``weights_file``."""
    from training.model import build_model

    model = build_model(config.image_size, "none", config.backbone, config.dropout)
    if weights_file is not None:
        model.load_weights(weights_file)
    return model


def _logits(model: Any, images: np.ndarray, batch_size: int) -> np.ndarray:
    import keras

    from training.model import LOGITS_LAYER

    logit_model = keras.Model(model.input, model.get_layer(LOGITS_LAYER).output)
    out = [
        np.asarray(logit_model(np.asarray(images[i : i + batch_size], np.float32), training=False))
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, NUM_CLASSES), np.float32)


def _embed(model: Any, images: np.ndarray, config: TrainConfig, desc: str) -> np.ndarray:
    from training.ood_score import embed

    progress = Progress(desc, len(images))
    return embed(model, images, config.batch_size, on_batch=progress.update)


def probe_stage(config: TrainConfig, data: PreparedData, stages: Stages) -> dict[str, Any]:
    """Stage ``probe``: features of the frozen ImageNet backbone, one probe per C, the best on validation."""
    import keras

    from training.model import build_model
    from training.probe import fit_probe

    keras.utils.set_random_seed(config.seed)
    base = build_model(config.image_size, config.weights, config.backbone, config.dropout)
    train_features = _embed(base, data.train_images, config, "probe: training features")
    val_features = _embed(base, data.val_images, config, "probe: validation features")
    result = fit_probe(train_features, data.train_labels, val_features, data.val_labels, config.probe_c)
    np.savez(stages.path("probe.npz"), coef=result.coef, intercept=result.intercept)
    log.info(
        "probe: C %g chosen (validation accuracy %s)", result.c, [round(s["val_accuracy"], 4) for s in result.sweep]
    )
    return {
        **result.summary(),
        "features": f"frozen {config.backbone} backbone ({Path(config.weights).name}), global average pooling",
        "fitted_on": f"training split ({len(data.train_labels)} images)",
        "c_chosen_on": "validation accuracy",
    }


def _trial(model: Any, data: PreparedData, dev: DevSet | None, batch_size: int) -> dict[str, Any]:
    from training.metrics import classification_metrics, softmax

    out: dict[str, Any] = {}
    sets = [("val", data.val_images, data.val_labels)] + ([("dev", dev.images, dev.labels)] if dev else [])
    for name, images, labels in sets:
        m = classification_metrics(softmax(_logits(model, images, batch_size)), labels)
        out[f"{name}_accuracy"] = m["accuracy"]
        out[f"{name}_balanced_accuracy"] = m["balanced_accuracy"]
        out[f"{name}_sensitivity"] = {c: v["sensitivity"] for c, v in m["per_class"].items()}
    return out


def mix_stage(
    config: TrainConfig, data: PreparedData, dev: DevSet | None, stages: Stages, tuned_file: Path, key: dict[str, Any]
) -> dict[str, Any]:
    """Stage ``mix``: every alpha of the grid measured (each one recorded as it finishes, so an interrupted
    stage resumes), alpha chosen by the rule, the chosen mix saved as ``stages/mix.weights.h5``."""
    from training.mix import choose_alpha, mixed_weights
    from training.probe import probe_model

    alphas = check_alphas(config.mix_alphas)
    tuned = _plain_model(config, tuned_file)
    if alphas == (1.0,):
        tuned.save_weights(stages.path("mix.weights.h5"))
        return {"alpha": 1.0, "grid": [1.0], "chosen_on": "no mix asked for (--mix-alphas 1)", "mixes": {}}
    stored = np.load(stages.path("probe.npz"))
    probe = probe_model(
        config.image_size, config.weights, config.backbone, config.dropout, stored["coef"], stored["intercept"]
    )
    probe_weights = [np.asarray(w) for w in probe.get_weights()]
    tuned_weights = [np.asarray(w) for w in tuned.get_weights()]
    trials_file = stages.path("mix_trials.json")
    trials: dict[float, dict[str, Any]] = {}
    if trials_file.is_file() and stages.partial_results_valid("mix"):
        saved = json.loads(trials_file.read_text())
        if saved.get("key") == json.loads(json.dumps(key)):
            trials = {float(a): t for a, t in saved["trials"].items()}
    mix = _plain_model(config)
    started = time.perf_counter()
    for i, alpha in enumerate(alphas, 1):
        if alpha in trials:
            continue
        mix.set_weights(mixed_weights(probe_weights, tuned_weights, alpha))
        trials[alpha] = _trial(mix, data, dev, config.batch_size)
        t = trials[alpha]
        log.info(
            "mix: alpha %.2f (%d/%d): validation accuracy %.4f%s, %.0f s elapsed",
            alpha,
            i,
            len(alphas),
            t["val_accuracy"],
            f", {dev.name} accuracy {t['dev_accuracy']:.4f}" if dev else "",
            time.perf_counter() - started,
        )
        payload = {"key": key, "trials": {str(a): v for a, v in sorted(trials.items())}}
        tmp = trials_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, indent=1))
        os.replace(tmp, trials_file)
    alpha, how = choose_alpha(trials, config.mix_rule, dev is not None)
    mix.set_weights(mixed_weights(probe_weights, tuned_weights, alpha))
    mix.save_weights(stages.path("mix.weights.h5"))
    log.info("mix: alpha %.2f chosen (%s)", alpha, how)
    return {
        "alpha": alpha,
        "grid": list(alphas),
        "rule": config.mix_rule,
        "chosen_on": how,
        "mixes": {str(a): t for a, t in sorted(trials.items())},
    }


def thresholds_stage(config: TrainConfig, data: PreparedData, dev: DevSet | None, version_dir: Path) -> dict[str, Any]:
    """Stage ``thresholds``: the exported model through the service's own loader, calibrated on validation (and
    the dev folder), the thresholds written into its metadata."""
    from service.config import Settings
    from service.inference.classifier import load_model
    from training.ood_thresholds import Collection, calibrate, write_metadata

    settings = Settings(
        _env_file=None,
        model_dir=version_dir,
        runtime="tensorflow",
        tta="none",
        warmup=False,
        inference_streams=1,
    )  # type: ignore[call-arg]
    model = load_model(settings, version_dir)
    labelled = {
        "validation": Collection(
            list(data.val_images), ["MRI (validation)"] * len(data.val_labels), data.val_labels.tolist()
        )
    }
    if dev is not None:
        labelled[dev.name] = Collection(list(dev.images), [f"MRI ({dev.name})"] * len(dev.labels), dev.labels.tolist())
    result = calibrate(model, labelled, config.target_true_accept, config.max_correct_warned)
    section = result.section()
    section["calibration"]["chosen_on"] = (
        f"validation and {dev.name}" if dev is not None else "validation alone (no development folder given)"
    )
    write_metadata(version_dir, section)
    log.info("thresholds: %s", result.thresholds.to_dict())
    return {"thresholds": result.thresholds.to_dict(), "calibration": section["calibration"]}


def report_stage(config: TrainConfig, dev: DevSet | None, version_dir: Path, report_dir: Path) -> dict[str, Any]:
    """Stage ``report``: the exported model evaluated on ``--test`` (never used to choose) and on the dev
    folder (used to choose: not an independent measure)."""
    from training.evaluate import evaluate

    out: dict[str, Any] = {}
    if config.test:
        metrics = evaluate(version_dir, Path(config.test), report_dir, progress=config.progress)
        out["test"] = _headline(metrics)
    if dev is not None and config.dev_dir:
        metrics = evaluate(version_dir, Path(config.dev_dir), report_dir / "dev", progress=config.progress)
        out["dev"] = _headline(metrics)
    return out


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    keep = ("n", "accuracy", "accuracy_ci95", "balanced_accuracy", "macro_f1", "ece_15")
    out = {"raw": {k: metrics["raw"][k] for k in keep if k in metrics["raw"]}}
    out["raw"]["sensitivity"] = {c: v["sensitivity"] for c, v in metrics["raw"]["per_class"].items()}
    if "deduplicated" in metrics:
        out["deduplicated"] = {k: metrics["deduplicated"][k] for k in keep if k in metrics["deduplicated"]}
    return out


def _update_metadata(version_dir: Path, changes: dict[str, Any]) -> None:
    path = version_dir / "metadata.json"
    metadata = {**json.loads(path.read_text()), **changes}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(metadata, indent=2, sort_keys=True))
    os.replace(tmp, path)


def train(config: TrainConfig) -> Path | None:
    """Run the recipe and return the published version folder (``None`` on a worker that is not the chief)."""
    import keras

    from training import cluster
    from training.data import without_file_names, write_data_report
    from training.export import export_model
    from training.publish import publish
    from training.report import write_training_report

    overrides = config.overrides()
    config = replace(config, weights=resolve_weights(config.backbone, config.weights))
    check_alphas(config.mix_alphas)
    if config.head_init == "probe" and config.from_stage == "probe":
        raise ValueError(
            "--from-stage probe: with --head-init probe the probe comes before fine-tuning; start a new run instead"
        )
    if config.mixed_precision:
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            keras.mixed_precision.set_global_policy("mixed_float16")
        else:
            log.warning("--mixed-precision ignored: no GPU")
    work = Path(config.work_dir)
    report_dir = Path(config.report_dir or work / "report")
    stages = Stages(work, config.resume, config.from_stage)
    strategy = select_strategy()

    def load_data() -> tuple[PreparedData, DevSet | None]:
        return prepare_data(config), DevSet(Path(config.dev_dir), config) if config.dev_dir else None

    (data, dev), times = timed("prepare", load_data)
    prepare_key = {
        "fingerprint": data.info.get("fingerprint"),
        "split": data.info.get("split"),
        "preprocessing": data.preprocessing.to_dict(),
        "dev": dev.info["fingerprint"] if dev else None,
    }
    if stages.stored("prepare", prepare_key) is None:
        stages.mark_rerun()
    stages.record("prepare", prepare_key, {"split": data.info.get("split"), "dev": dev.info if dev else None}, times)
    write_data_report(report_dir, data.info)

    probe_key = {k: getattr(config, k) for k in ("probe_c", "weights", "backbone", "image_size", "seed")}
    probe: dict[str, Any] = {}
    head = None
    if config.head_init == "probe":  # LP-FT: the probe first, and fine-tuning starts from it
        probe = stages.run("probe", probe_key, lambda: probe_stage(config, data, stages))
        with np.load(stages.path("probe.npz")) as arrays:
            head = (arrays["coef"], arrays["intercept"])
    phase_files = [work / "phases" / f"{name}.weights.h5" for name, *_ in training_phases(config)]
    already_tuned = config.resume and all(p.is_file() for p in phase_files)
    fit_key = {k: v for k, v in config.recipe_values().items() if k not in _AFTER_FIT}
    if head is not None:
        fit_key["probe_c"] = config.probe_c
    earlier = stages.stored("finetune", fit_key) if already_tuned else None
    (_, history), times = timed("finetune", lambda: fit(config, data, strategy, head))
    if already_tuned:
        loaded = {"note": "its phases were complete: this is the time to load them"}
        times = {**(earlier["times"] if earlier else {**times, **loaded}), "resumed": True}
    else:
        stages.mark_rerun()
    stages.record("finetune", fit_key, {"epochs": len(history.get("loss", []))}, times)
    if not cluster.is_chief():
        log.info("not the chief: the stages after fine-tuning run on the chief only")
        return None
    tuned_file = phase_files[-1]  # the fine-tuned weights (the best epoch's, as early stopping restored them)

    dev_key = dev.info["fingerprint"] if dev else None
    if head is None and check_alphas(config.mix_alphas) == (1.0,):
        stages.record("probe", {}, {"skipped": "no mix asked for (--mix-alphas 1)"}, _no_time())
    elif head is None:
        probe = stages.run("probe", probe_key, lambda: probe_stage(config, data, stages))
    mix_key = {"alphas": config.mix_alphas, "rule": config.mix_rule, "dev": dev_key}
    mix = stages.run("mix", mix_key, lambda: mix_stage(config, data, dev, stages, tuned_file, mix_key))
    model = _plain_model(config, stages.path("mix.weights.h5"))

    def temperature() -> dict[str, Any]:
        t, validation = validation_report(model, data, config.batch_size, config.calibrate, config.seed)
        v = validation["calibrated"]
        log.info(
            "validation (held-out half): accuracy %.4f, ECE %.4f -> %.4f (temperature %.3f)",
            v["accuracy"],
            validation["uncalibrated"]["ece_15"],
            v["ece_15"],
            t,
        )
        return {"temperature": t, "validation": validation}

    calibrated = stages.run("temperature", {"calibrate": config.calibrate, "seed": config.seed}, temperature)

    def ood_bank() -> dict[str, Any]:
        bank = _embed(model, data.train_images, config, "ood bank: training embeddings")
        np.save(stages.path("ood_bank.npy"), bank.astype(np.float32))
        return {"bank_size": int(bank.shape[0]), "dim": int(bank.shape[1])}

    stages.run("ood_bank", {}, ood_bank)
    export_root = work / EXPORT_DIR
    version_dir = export_root / "1"

    def export() -> dict[str, Any]:
        shutil.rmtree(export_root, ignore_errors=True)
        metadata = {
            "model_name": config.model_name,
            "classes": list(CLASSES),
            "input": {"shape": [config.image_size, config.image_size, 3], "dtype": "float32", "range": [0, 255]},
            "preprocessing": data.preprocessing.to_dict(),
            "architecture": {
                "backbone": config.backbone,
                "weights": config.weights,
                "dropout": config.dropout,
                "parameters": int(model.count_params()),
            },
            "training": config.recipe_values(),
            "recipe_overrides": overrides,
            "data": without_file_names(data.info),
            "dev_set": dev.info if dev else {"used": False, "note": NO_DEV},
            "validation": calibrated["validation"],
            "history": history,
            "wise_ft": {"method": MIX_METHOD, **mix, "linear_probe": probe},
            "libraries": library_versions(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "strategy": type(strategy).__name__,
            "intended_use": INTENDED_USE,
        }
        bank = np.load(stages.path("ood_bank.npy"))
        seed = data.info.get("split_parameters", {}).get("seed", config.seed)
        fitted_on = f"training split ({len(bank)} images, de-duplicated, seed {seed})"
        export_model(model, export_root, metadata, calibrated["temperature"], 1, bank, config.ood_k, fitted_on)
        return {"version_dir": str(version_dir)}

    stages.run("export", {"ood_k": config.ood_k, "model_name": config.model_name}, export)
    threshold_key = {
        "target_true_accept": config.target_true_accept,
        "max_correct_warned": config.max_correct_warned,
        "dev": dev_key,
    }
    thresholds = stages.run("thresholds", threshold_key, lambda: thresholds_stage(config, data, dev, version_dir))
    report_key = {"test": config.test, "dev": dev_key}
    evaluation = stages.run("report", report_key, lambda: report_stage(config, dev, version_dir, report_dir))

    total = round(sum(t["wall_s"] for t in stages.times.values()), 1)
    timings = [{"stage": name, **times} for name, times in stages.times.items()]  # a list: in the stages' order
    _update_metadata(version_dir, {"stages": timings, "training_seconds": total})
    write_training_report(
        report_dir,
        json.loads((version_dir / "metadata.json").read_text()),
        {"thresholds": thresholds, "evaluation": evaluation},
    )

    publish_key = {"model_dir": str(Path(config.model_dir).resolve())}
    done = stages.stored("publish", publish_key)
    if done is not None and Path(done["result"]["version_dir"]).is_dir():
        log.info("already published as %s", done["result"]["version_dir"])
        return Path(done["result"]["version_dir"])
    published, times = timed("publish", lambda: publish(version_dir, Path(config.model_dir)))
    stages.record("publish", publish_key, {"version_dir": str(published)}, times)
    log.info("published %s (the stages took %.0f s in all)", published, total)
    return published


NO_DEV = "no --dev-dir: the mix's alpha and the warning thresholds were chosen on validation alone"
#: Options that only the stages after fine-tuning read.
_AFTER_FIT = {
    "probe_c",
    "mix_alphas",
    "mix_rule",
    "calibrate",
    "ood_k",
    "target_true_accept",
    "max_correct_warned",
    "model_name",
}


def _no_time() -> dict[str, Any]:
    return {"wall_s": 0.0, "cpu_s": 0.0, "finished": datetime.now(UTC).isoformat(timespec="seconds"), "resumed": False}


def run(argv: list[str]) -> int:
    """Entry point of ``mri-classifier train``."""
    configure_logging()
    from training.sagemaker import SageMakerEnv, run_training_job

    if not argv and SageMakerEnv().is_training_job():
        return run_training_job(SageMakerEnv(), lambda options: train(config_from_args(options)))
    version_dir = train(config_from_args(argv))
    sys.stdout.write(json.dumps({"model": None if version_dir is None else str(version_dir)}) + "\n")
    return 0
