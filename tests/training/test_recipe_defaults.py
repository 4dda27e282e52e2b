"""Every default of ``mri-classifier train`` is the recipe (``training/recipe.json``), and the ImageNet weights
default finds the file ``make lite0-weights`` writes or fails naming it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from training import recipe as recipes
from training.train import RUN_OPTIONS, TrainConfig, build_parser, config_from_args


def test_every_option_default_is_the_recipe() -> None:
    recipe = recipes.recipe()
    parser = build_parser()
    options = {a.dest for a in parser._actions if a.dest != "help"} - set(RUN_OPTIONS)
    assert options == set(recipe), "every option that decides the model is in the recipe, and nothing else"
    config = config_from_args(["--data", "x"])
    flat = {**dataclasses.asdict(config), **dataclasses.asdict(config.augment)}
    for key, value in recipe.items():
        assert flat[key] == (tuple(value) if isinstance(value, list) else value), key
    assert config.overrides() == {}
    assert TrainConfig(data="x") == config, "the dataclass and the command line agree"


def test_options_override_the_recipe_and_are_recorded() -> None:
    config = config_from_args(["--data", "x", "--epochs", "1", "--mix-alphas", "0.5,1", "--no-crop-brain"])
    assert config.epochs == 1 and config.mix_alphas == (0.5, 1.0) and not config.crop_brain
    assert config.overrides() == {
        "epochs": [16, 1],
        "mix_alphas": [[0.0, 0.3, 0.5, 0.7, 0.75, 0.8, 0.85, 1.0], [0.5, 1.0]],
        "crop_brain": [True, False],
    }
    assert config_from_args(["--data", "x", "--from-stage", "thresholds"]).resume, "--from-stage resumes"
    with pytest.raises(SystemExit):
        config_from_args(["--data", "x", "--mix-alphas", "a,b"])


def test_imagenet_weights_are_found_or_the_error_names_make_lite0_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = [tmp_path / "a" / recipes.LITE0_WEIGHTS_FILE, tmp_path / "b" / recipes.LITE0_WEIGHTS_FILE]
    monkeypatch.setattr(recipes, "lite0_weights_candidates", lambda: missing)
    with pytest.raises(FileNotFoundError, match="make lite0-weights"):
        recipes.resolve_weights("efficientnet_lite0", "imagenet")
    missing[1].parent.mkdir()
    missing[1].write_bytes(b"weights")
    assert recipes.resolve_weights("efficientnet_lite0", "imagenet") == str(missing[1])
    assert recipes.resolve_weights("efficientnet_lite0", "none") == "none"
    assert recipes.resolve_weights("efficientnet_b0", "imagenet") == "imagenet"
    with pytest.raises(ValueError, match="--weights none"):
        recipes.resolve_weights("tiny", "imagenet")


def test_the_weights_are_looked_for_where_make_and_the_image_put_them() -> None:
    candidates = [str(p) for p in recipes.lite0_weights_candidates()]
    assert candidates[0] == "scratch/weights/efficientnet_lite0_imagenet.weights.h5"
    assert candidates[-1] == "/opt/mri-classifier/weights/efficientnet_lite0_imagenet.weights.h5"
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    assert "LITE0_DIR ?= scratch/weights" in makefile and "efficientnet_lite0_imagenet.weights.h5" in makefile
