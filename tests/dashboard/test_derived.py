"""Client-side derived quantities, checked by hand."""

import math

import numpy as np
import pandas as pd
import pytest

from dashboard import derived


def test_gradient_weights_eq8():
    # β((1+α)s_ref − s_θ) = 0.1 * (1.5 * 2 − 3) = 0 → σ(0) = 0.5; and 0.1 * (2 − 0) = 0.2.
    w = derived.gradient_weights(np.array([2.0, 2.0]), np.array([3.0, 0.0]), beta=0.1, alpha=0.5)
    assert w[0] == pytest.approx(0.5)
    w0 = derived.gradient_weights(np.array([2.0]), np.array([0.0]), beta=0.1)
    assert w0[0] == pytest.approx(1 / (1 + math.exp(-0.2)))


def test_pair_weights_at_start_use_alpha_only_for_reference_scaling_objectives():
    pairs = pd.DataFrame({"s_ref": [10.0, -10.0]})
    extras = [{}, {}]
    aipo, caption = derived.pair_gradient_weights(
        pairs, extras, objective="aipo", hyperparameters={"beta": 0.1, "alpha": 0.5}
    )
    # s_θ = s_ref at the start: β·α·s_ref = ±0.5.
    assert aipo == pytest.approx([1 / (1 + math.exp(-0.5)), 1 / (1 + math.exp(0.5))])
    assert "start of training" in caption and "α = 0.5" in caption
    rdpo, caption = derived.pair_gradient_weights(
        pairs, extras, objective="rdpo", hyperparameters={"beta": 0.1, "alpha": 0.5}
    )
    assert rdpo == pytest.approx([0.5, 0.5]) and "α = 0" in caption


def test_pair_weights_prefer_recorded_values():
    pairs = pd.DataFrame({"s_ref": [1.0, 2.0]})
    recorded, caption = derived.pair_gradient_weights(
        pairs, [{"gradient_weight": 0.2}, {"gradient_weight": 0.9}], objective="dpo", hyperparameters={}
    )
    assert list(recorded) == [0.2, 0.9] and caption == "weights recorded by training"
    trained, caption = derived.pair_gradient_weights(
        pairs, [{"s_theta": 1.0}, {"s_theta": 2.0}], objective="dpo", hyperparameters={"beta": 1.0}
    )
    assert trained == pytest.approx([0.5, 0.5]) and "after training" in caption


def test_global_steps_continue_across_iterations():
    frame = pd.DataFrame({"iteration": [1, 0, 0, 1, 0], "step": [1, 1, 2, 2, 3], "value": range(5)})
    result = derived.global_steps(frame)
    assert list(zip(result["iteration"], result["step"], result["global_step"], strict=True)) == [
        (0, 1, 1),
        (0, 2, 2),
        (0, 3, 3),
        (1, 1, 4),
        (1, 2, 5),
    ]
    zero_based = derived.global_steps(pd.DataFrame({"iteration": [0, 0, 1], "step": [0, 1, 0]}))
    assert list(zero_based["global_step"]) == [0, 1, 2]
    assert derived.global_steps(pd.DataFrame(columns=["iteration", "step"])).empty
