"""Client-side derived quantities, checked by hand."""

import math

import pandas as pd

from dashboard import derived


def test_pair_weights_are_the_servers_values():
    recorded, caption = derived.pair_gradient_weights([{"gradient_weight": 0.2}, {"gradient_weight": 1.4}])
    assert list(recorded) == [0.2, 1.4] and "evaluate stage" in caption


def test_pair_weights_are_unavailable_before_evaluate_and_never_recomputed():
    # s_θ alone (an older worker) or no extras at all: the dashboard does not apply a DPO formula.
    for extras in ([{"s_theta": 1.0}, {"s_theta": 2.0}], [None, None], [{"gradient_weight": 0.3}, {}], []):
        weights, caption = derived.pair_gradient_weights(extras)
        assert weights.size == 0 and "not available" in caption


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


def _evaluation(
    j: int, length: float, lc: float | None, lc_se: float | None, reason: str | None = None
) -> dict:
    return {"benchmark": "alpaca_eval", "policy_index": j, "iteration": None if j == 0 else j - 1, "n": 32,
            "win_rate": 10.0 + j, "win_rate_se": 3.0, "lc_win_rate": lc, "lc_win_rate_se": lc_se,
            "lc_unavailable_reason": reason, "avg_length": length, "judge": "pairrm:x",
            "judge_label": "x, fixed", "self_judged": False}  # fmt: skip


def test_rates_show_their_se_or_why_they_are_missing():
    assert derived.rate_text(31.24, 7.06) == "31.2 ± 7.1"
    assert (
        derived.rate_text(None, None, "too few judgements (32 < 50)") == "n/a (too few judgements (32 < 50))"
    )
    assert derived.rate_text(float("nan"), float("nan")) == "n/a"


def test_deltas_from_base_per_run_with_combined_se():
    frame = derived.evaluation_frame(
        [
            _evaluation(0, 800.0, 20.0, 3.0),
            _evaluation(1, 1000.0, 24.0, 4.0),
            _evaluation(2, 1200.0, None, None, "why"),
        ],
        run="aipo",
        run_id=1,
    )
    deltas = derived.deltas_from_base(frame)
    assert deltas["policy_index"].tolist() == [1, 2]
    assert deltas["length_change_pct"].tolist() == [25.0, 50.0]
    assert deltas["lc_change"].iloc[0] == 4.0 and deltas["lc_change_se"].iloc[0] == 5.0
    assert math.isnan(deltas["lc_change"].iloc[1]) and deltas["lc_unavailable_reason"].iloc[1] == "why"
    assert deltas["win_rate_change"].tolist() == [1.0, 2.0]


def test_protocol_names_judge_sample_and_seed():
    text = derived.protocol_text({"evaluation": {"limit": 32, "seed": 7}}, _evaluation(0, 1.0, None, None))
    assert (
        text == "judge: x, fixed · alpaca_eval: 32 prompts judged (a seeded sample of 32, evaluation seed 7)"
    )
