"""Client-side derived quantities, checked by hand."""

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
