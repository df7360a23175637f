"""Paired win-rate difference on shared prompts (aipo_core.paired)."""

from __future__ import annotations

import math

import numpy as np

from aipo_core.paired import Z_95, paired_difference


def test_difference_and_se_are_the_mean_and_sd_of_per_prompt_differences() -> None:
    a = {"0": 1.0, "1": 1.0, "2": 2.0, "3": 1.0, "only_a": 2.0}
    b = {"0": 2.0, "1": 2.0, "2": 2.0, "3": 1.5, "only_b": 1.0}
    result = paired_difference(a, b)
    d = np.array([100.0, 100.0, 0.0, 50.0])
    assert result.n == 4 and result.difference == d.mean()
    assert math.isclose(result.se, d.std(ddof=1) / 2) and result.within_noise is False


def test_a_difference_inside_its_95_interval_is_within_noise() -> None:
    a = {str(i): 1.0 + (i % 2) for i in range(10)}
    b = {str(i): 1.0 + ((i + 1) % 2) for i in range(10)}  # each prompt flips: mean 0, large SE
    result = paired_difference(a, b)
    assert result.difference == 0.0 and result.within_noise is True
    assert abs(result.difference) <= Z_95 * result.se


def test_unjudged_prompts_are_left_out_and_too_few_shared_is_a_reason() -> None:
    result = paired_difference({"0": 1.0, "1": None}, {"0": 2.0, "1": 2.0})
    assert result.n == 1 and result.difference is None and "< 2" in result.reason
    assert result.within_noise is None
