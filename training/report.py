"""The training report: what each stage chose and measured, and how long it took (``training_report.md`` and
``training_report.json`` in the report folder, beside the evaluation's ``summary.md``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPORT_JSON = "training_report.json"
REPORT_MD = "training_report.md"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def markdown(metadata: dict[str, Any], extra: dict[str, Any]) -> str:
    """The report as Markdown, from the exported model's metadata and the stages' results."""
    lines = [f"# Training report: {metadata.get('model_name')}", ""]
    overrides = metadata.get("recipe_overrides") or {}
    if overrides:
        changed = ", ".join(f"`{k}` {v[0]!r} -> {v[1]!r}" for k, v in sorted(overrides.items()))
        lines += [f"Recipe (`training/recipe.json`) with these changes: {changed}.", ""]
    else:
        lines += ["Recipe: `training/recipe.json` as shipped, no option changed.", ""]
    split = metadata.get("data", {}).get("split", {})
    lines += [f"Data: {split.get('train')} training and {split.get('val')} validation images (de-duplicated).", ""]
    dev = metadata.get("dev_set", {})
    if dev.get("name"):
        lines += [
            f"Development folder `{dev['name']}` ({dev['images']} images from another source): used only to choose "
            "the mix's alpha and the warning thresholds, so its figures below are not an independent measure.",
            "",
        ]
    else:
        lines += [f"{dev.get('note', '')}.", ""]

    lines += ["## Stages", "", "| stage | wall time | CPU time | |", "|---|---:|---:|---|"]
    for t in metadata.get("stages", []):
        note = t.get("note") or ("reused from an earlier run" if t.get("resumed") else "")
        lines.append(f"| {t['stage']} | {t['wall_s']:.1f} s | {t['cpu_s']:.1f} s | {note} |")
    lines.append("")

    wise = metadata.get("wise_ft", {})
    probe = wise.get("linear_probe") or {}
    if probe.get("sweep"):
        sweep = ", ".join(f"C {s['c']:g}: {_pct(s['val_accuracy'])}" for s in probe["sweep"])
        lines += ["## Linear probe", "", f"Validation accuracy per C: {sweep}; chosen C {probe['c']:g}.", ""]
    lines += ["## Weight mix (WiSE-FT)", "", f"Alpha {wise.get('alpha')}: {wise.get('chosen_on')}.", ""]
    mixes = wise.get("mixes") or {}
    if mixes:
        has_dev = any("dev_accuracy" in m for m in mixes.values())
        lines += [
            "| alpha | validation accuracy |" + (" dev accuracy |" if has_dev else ""),
            "|---:|---:|" + ("---:|" if has_dev else ""),
        ]
        for alpha, m in mixes.items():
            row = f"| {alpha} | {_pct(m['val_accuracy'])} |"
            lines.append(row + (f" {_pct(m.get('dev_accuracy'))} |" if has_dev else ""))
        lines.append("")

    validation = metadata.get("validation", {})
    calibrated = validation.get("calibrated", {})
    lines += [
        "## Temperature",
        "",
        f"Temperature {validation.get('temperature', 1.0):.3f}, fitted on {validation.get('temperature_fitted_on')}; "
        f"measured on {validation.get('metrics_measured_on')}: accuracy {_pct(calibrated.get('accuracy'))}, ECE "
        f"{validation.get('uncalibrated', {}).get('ece_15', float('nan')):.3f} -> "
        f"{calibrated.get('ece_15', float('nan')):.3f}.",
        "",
    ]

    ood = metadata.get("ood", {})
    if ood:
        cal = ood.get("calibration", {})
        lines += [
            "## Warning thresholds",
            "",
            f"Chosen on {cal.get('chosen_on', cal.get('in_distribution'))}: colour spread <= "
            f"{ood.get('max_colour_spread')}, border brightness <= {ood.get('max_border_brightness')}, top "
            f"probability >= {ood.get('min_confidence')}, ood_score <= {ood.get('max_ood_score')}. Non-MRI images "
            f"accepted by every check: {_pct(cal.get('false_accept_all_checks'))}.",
            "",
            "| set | images | wrong | error-detection AUROC | correct warned | wrong warned |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, w in cal.get("warnings", {}).items():
            auroc = f"{w['error_auroc']:.3f}" if "error_auroc" in w else "—"
            lines.append(
                f"| {name} | {w.get('images')} | {w.get('wrong')} | {auroc} | {_pct(w.get('correct_warned'))} | "
                f"{_pct(w.get('wrong_warned'))} |"
            )
        lines.append("")

    evaluation = extra.get("evaluation", {})
    if evaluation:
        lines += ["## Evaluation of the exported model", "", "| set | images | accuracy | balanced accuracy | ECE |"]
        lines.append("|---|---:|---:|---:|---:|")
        for name, label in (
            ("test", "test (never used to choose)"),
            ("dev", f"{dev.get('name', 'dev')} (used to choose)"),
        ):
            for part in ("raw", "deduplicated"):
                m = evaluation.get(name, {}).get(part)
                if m:
                    title = label if part == "raw" else f"{label}, de-duplicated"
                    lines.append(
                        f"| {title} | {m['n']} | {_pct(m['accuracy'])} | {_pct(m['balanced_accuracy'])} | "
                        f"{m['ece_15']:.3f} |"
                    )
        lines.append("")
    return "\n".join(lines)


def write_training_report(report_dir: Path, metadata: dict[str, Any], extra: dict[str, Any]) -> Path:
    """Write ``training_report.md`` and ``training_report.json``; returns the Markdown file."""
    report_dir.mkdir(parents=True, exist_ok=True)
    summary = {
        "recipe_overrides": metadata.get("recipe_overrides"),
        "stages": metadata.get("stages"),
        "dev_set": metadata.get("dev_set"),
        "wise_ft": metadata.get("wise_ft"),
        "validation": metadata.get("validation"),
        "ood": metadata.get("ood"),
        **extra,
    }
    (report_dir / REPORT_JSON).write_text(json.dumps(summary, indent=1))
    path = report_dir / REPORT_MD
    path.write_text(markdown(metadata, extra))
    return path
