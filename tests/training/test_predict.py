"""``mri-classifier predict``: files and folders scored into a CSV through the service's own model loading,
preprocessing and runtime (the session's tiny model)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from service.imaging.preprocessing import preprocess
from service.inference.classifier import load_model
from service.labels import CLASSES
from tests.service import images
from tests.service.conftest import make_settings
from training.cli import main


def _read(path: Path) -> dict[str, dict[str, str]]:
    with path.open() as fh:
        return {Path(row["file"]).name: row for row in csv.DictReader(fh)}


@pytest.fixture
def scans(tmp_path: Path) -> Path:
    folder = tmp_path / "scans"
    (folder / "nested").mkdir(parents=True)
    (folder / "a.jpg").write_bytes(images.jpeg(20))
    (folder / "b.png").write_bytes(images.png_variants()["gray16"])
    (folder / "nested" / "c.dcm").write_bytes(images.dicom())
    (folder / "nested" / "photo.png").write_bytes(images.encode(np.full((64, 64, 3), (200, 30, 30), np.uint8), "PNG"))
    (folder / "broken.jpg").write_bytes(images.jpeg(21)[:200])
    (folder / "notes.txt").write_text("not an image")
    (folder / ".DS_Store").write_bytes(b"\0\0")
    return folder


def test_predict_scores_every_file_like_the_service(
    tmp_path: Path, scans: Path, model_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out" / "predictions.csv"
    extra = tmp_path / "extra.jpg"
    extra.write_bytes(images.jpeg(22))
    argv = ["predict", str(scans), str(extra), str(tmp_path / "missing.png"), "--out", str(out)]
    code = main(
        [*argv, "--model-dir", str(model_root), "--runtime", "tensorflow", "--batch-size", "2", "--no-progress"]
    )
    assert code == 0
    assert "5 scored, 3 skipped" in capsys.readouterr().err
    rows = _read(out)
    assert set(rows) == {"a.jpg", "b.png", "c.dcm", "photo.png", "broken.jpg", "notes.txt", "extra.jpg", "missing.png"}
    model = load_model(make_settings(model_root))
    for name, path in [("a.jpg", scans / "a.jpg"), ("c.dcm", scans / "nested" / "c.dcm"), ("extra.jpg", extra)]:
        reference = model.predict(preprocess(path.read_bytes(), model.preprocess)[None])[0]
        got = np.array([float(rows[name][f"p_{c}"]) for c in CLASSES])
        assert np.allclose(got, reference, atol=1e-5), name
        assert rows[name]["label"] == CLASSES[int(np.argmax(reference))] and rows[name]["skipped"] == ""
    assert rows["photo.png"]["likely_mri"] == "False" and "colour_image" in rows["photo.png"]["reasons"]
    assert rows["a.jpg"]["likely_mri"] == "True"
    scored = {
        "a.jpg": scans / "a.jpg",
        "b.png": scans / "b.png",
        "c.dcm": scans / "nested" / "c.dcm",
        "photo.png": scans / "nested" / "photo.png",
        "extra.jpg": extra,
    }
    for name, path in scored.items():  # the model's own ood_score in every row (6 decimals in the CSV)
        reference = model.infer(preprocess(path.read_bytes(), model.preprocess)[None])[0]["ood_score"]
        assert float(rows[name]["ood_score"]) == pytest.approx(float(reference), abs=1e-5), name
    assert "could not decode" in rows["broken.jpg"]["skipped"] and rows["broken.jpg"]["label"] == ""
    assert "not a JPEG, PNG or DICOM" in rows["notes.txt"]["skipped"]
    assert rows["missing.png"]["skipped"] == "no such file or folder"


def test_predict_fails_only_when_nothing_was_scored(
    tmp_path: Path, model_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnothing")
    out = tmp_path / "p.csv"
    code = main(["predict", str(bad), "--out", str(out), "--model-dir", str(model_root), "--no-progress"])
    assert code == 1 and "0 scored, 1 skipped" in capsys.readouterr().err
    assert _read(out)["bad.png"]["skipped"].startswith("could not decode")
    code = main(["predict", str(bad), "--out", str(out), "--model-dir", str(tmp_path / "none"), "--no-progress"])
    assert code == 1 and "model not loaded" in capsys.readouterr().err


def test_predict_runs_every_thread_on_each_batch_unless_told(
    tmp_path: Path, model_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One caller scores batch after batch: one OpenVINO stream with every thread, not two streams that would
    leave half the CPU idle (an explicit MRI_INFERENCE_STREAMS still wins)."""
    import service.inference.classifier
    from service.config import Settings
    from training.predict import predict_files

    seen: list[int] = []
    real = service.inference.classifier.load_model

    def spy(settings: Settings, *args: object) -> object:
        seen.append(settings.inference_streams)
        return real(settings, *args)

    monkeypatch.setattr(service.inference.classifier, "load_model", spy)
    image = tmp_path / "a.jpg"
    image.write_bytes(images.jpeg(30))
    rows = list(predict_files([image], make_settings(model_root), progress=False))
    monkeypatch.setenv("MRI_INFERENCE_STREAMS", "2")
    rows += list(
        predict_files([image], Settings(_env_file=None, model_dir=model_root, runtime="tensorflow"), progress=False)
    )  # type: ignore[call-arg]
    assert seen == [1, 2] and len(rows) == 2
