"""The WiSE-FT weight mix and its alpha rule."""

from __future__ import annotations

import numpy as np
import pytest

from training.mix import RULES, WITHOUT_DEV, check_alphas, choose_alpha, mixed_weights


def test_mixed_weights_interpolate_every_weight() -> None:
    probe = [np.zeros((2, 3), np.float32), np.full(3, 4.0, np.float32)]
    tuned = [np.ones((2, 3), np.float32), np.full(3, 8.0, np.float32)]
    mixed = mixed_weights(probe, tuned, 0.75)
    np.testing.assert_allclose(mixed[0], 0.75)
    np.testing.assert_allclose(mixed[1], 7.0)
    assert mixed[0].dtype == np.float32
    np.testing.assert_array_equal(mixed_weights(probe, tuned, 1.0)[1], tuned[1])
    np.testing.assert_array_equal(mixed_weights(probe, tuned, 0.0)[1], probe[1])
    with pytest.raises(ValueError, match="shapes differ"):
        mixed_weights([np.zeros(2)], [np.zeros(3)], 0.5)


def test_the_grid_must_hold_the_fine_tuned_model() -> None:
    assert check_alphas([1.0, 0.5, 0.5, 0.0]) == (0.0, 0.5, 1.0)
    with pytest.raises(ValueError, match="include 1"):
        check_alphas([0.0, 0.5])
    with pytest.raises(ValueError, match="between 0 and 1"):
        check_alphas([1.0, 1.5])


TRIALS = {  # version 3's measured mixes (validation, external-dev), rounded
    0.0: {"val_accuracy": 0.877, "dev_accuracy": 0.843},
    0.5: {"val_accuracy": 0.903, "dev_accuracy": 0.916},
    0.7: {"val_accuracy": 0.937, "dev_accuracy": 0.936},
    0.75: {"val_accuracy": 0.942, "dev_accuracy": 0.927},
    0.8: {"val_accuracy": 0.948, "dev_accuracy": 0.913},
    1.0: {"val_accuracy": 0.942, "dev_accuracy": 0.868},
}


def test_validation_floor_then_dev_chooses_version_3s_alpha() -> None:
    alpha, how = choose_alpha(TRIALS, "validation-floor-then-dev", has_dev=True)
    assert alpha == 0.75, "0.7 has the best dev accuracy but is below the fine-tuned model on validation"
    assert how == RULES["validation-floor-then-dev"]


def test_without_dev_the_rule_uses_validation_alone_and_says_so() -> None:
    alpha, how = choose_alpha(TRIALS, "validation-floor-then-dev", has_dev=False)
    assert alpha == 0.8 and how == WITHOUT_DEV
    assert choose_alpha(TRIALS, "validation", has_dev=True) == (0.8, RULES["validation"])


def test_ties_go_to_the_larger_alpha() -> None:
    tied = {0.3: {"val_accuracy": 0.9, "dev_accuracy": 0.8}, 1.0: {"val_accuracy": 0.9, "dev_accuracy": 0.8}}
    assert choose_alpha(tied, "validation-floor-then-dev", has_dev=True)[0] == 1.0
    assert choose_alpha(tied, "validation", has_dev=False)[0] == 1.0
    with pytest.raises(ValueError, match="alpha 1"):
        choose_alpha({0.3: tied[0.3]}, "validation", has_dev=False)
