"""Issue 14 item 4: the temperature is fitted on one half of validation and the calibration is measured on the
other half, so the reported ECE is not measured on the images that fitted it."""

from __future__ import annotations

import numpy as np
import pytest

from training.metrics import calibration_split, classification_metrics, fit_temperature, softmax
from training.model import LOGITS_LAYER, build_model
from training.train import PreparedData, validation_report


def _labels() -> np.ndarray:
    return np.repeat(np.arange(4), [10, 7, 12, 9])


def test_calibration_split_is_two_stratified_seeded_halves():
    labels = _labels()
    fit, held = calibration_split(labels, seed=5)
    assert not set(fit) & set(held) and sorted([*fit, *held]) == list(range(len(labels)))
    assert abs(len(fit) - len(held)) <= 1
    for c in range(4):
        assert abs((labels[fit] == c).sum() - (labels[held] == c).sum()) <= 1
    again = calibration_split(labels, seed=5)
    assert np.array_equal(fit, again[0]) and np.array_equal(held, again[1])
    assert not np.array_equal(fit, calibration_split(labels, seed=6)[0])
    tiny = calibration_split(np.array([0, 1, 2]), seed=5)  # nothing to hold out: said so in the report
    assert np.array_equal(tiny[0], tiny[1])


@pytest.fixture(scope="module")
def model():
    return build_model(32, backbone="tiny")


def _data(seed: int, labels: np.ndarray) -> PreparedData:
    x = np.random.default_rng(seed).integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)
    return PreparedData(x[:2], labels[:2], x, labels, info={})


def _logits(model, images: np.ndarray) -> np.ndarray:
    import keras

    return keras.Model(model.input, model.get_layer(LOGITS_LAYER).output).predict(images.astype(np.float32), verbose=0)


def test_temperature_never_sees_the_images_the_calibration_is_measured_on(model):
    labels = _labels()
    data = _data(0, labels)
    fit, held = calibration_split(labels, seed=11)
    temperature, report = validation_report(model, data, 8, calibrate=True, seed=11)
    # replace every held-out image: the temperature stays, the measured metrics move
    other = _data(1, labels)
    swapped = data.val_images.copy()
    swapped[held] = other.val_images[held]
    data2 = PreparedData(data.train_images, data.train_labels, swapped, labels, info={})
    temperature2, report2 = validation_report(model, data2, 8, calibrate=True, seed=11)
    assert temperature2 == pytest.approx(temperature, rel=1e-6)
    assert report2["calibrated"]["log_loss"] != pytest.approx(report["calibrated"]["log_loss"], rel=1e-6)
    # independently: T fitted on the calibration half only, metrics on the held-out half only
    logits = _logits(model, data.val_images)
    assert temperature == pytest.approx(fit_temperature(logits[fit], labels[fit]), rel=1e-4)
    expected = classification_metrics(softmax(logits[held], temperature), labels[held])
    assert report["calibrated"]["n"] == len(held) < len(labels)
    assert report["calibrated"]["ece_15"] == pytest.approx(expected["ece_15"], abs=1e-5)
    assert report["uncalibrated"]["n"] == len(held)
    assert "held-out half" in report["metrics_measured_on"]
    assert "calibration half" in report["temperature_fitted_on"]
    assert "early stopping" in report["epoch_chosen_on"]
