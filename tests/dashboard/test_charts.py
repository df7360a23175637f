"""Charts: the traces must carry exactly the input data (values hand-checked below)."""

import math

import numpy as np
import pandas as pd
import pytest

from dashboard import charts, theme


def _annotation_texts(fig) -> list[str]:
    return [a.text for a in fig.layout.annotations]


def test_win_rate_vs_length_one_line_pair_per_run_labelled_by_iteration():
    frame = pd.DataFrame(
        [
            {"run": "aipo", "iteration": 1, "avg_length": 1500.0, "win_rate": 20.0, "lc_win_rate": 25.0},
            {"run": "aipo", "iteration": 0, "avg_length": 1200.0, "win_rate": 10.0, "lc_win_rate": 12.5},
            {"run": "dpo", "iteration": 0, "avg_length": 1300.0, "win_rate": 11.0, "lc_win_rate": math.nan},
        ]
    )
    fig = charts.win_rate_vs_length(frame)
    names = [t.name for t in fig.data]
    # dpo has no LC win rate at all, so only its raw line is drawn.
    assert names == ["aipo · LC", "aipo · raw", "dpo · raw"]
    lc, raw, dpo_raw = fig.data
    assert list(lc.x) == [1200.0, 1500.0]  # sorted by iteration
    assert list(lc.y) == [12.5, 25.0]
    assert list(raw.y) == [10.0, 20.0]
    assert list(lc.text) == ["it 0", "it 1"]
    assert lc.line.dash == "solid" and raw.line.dash == "dash"
    assert lc.line.color == raw.line.color == theme.run_color(0)
    assert dpo_raw.line.color == theme.run_color(1)
    assert fig.layout.xaxis.title.text == "Average response length (chars)"
    assert fig.layout.yaxis.title.text == "Win rate (%)"


def test_win_rate_vs_length_empty_says_so():
    fig = charts.win_rate_vs_length(pd.DataFrame())
    assert len(fig.data) == 0
    assert _annotation_texts(fig) == ["No evaluated iterations yet."]


def test_reward_trajectories_colours_roles_and_splits_iterations():
    chosen = pd.DataFrame({"iteration": [0, 0, 1], "step": [2, 1, 1], "value": [0.2, 0.1, 0.3]})
    rejected = pd.DataFrame({"iteration": [0, 0, 1], "step": [1, 2, 1], "value": [-0.1, -0.3, -0.4]})
    fig = charts.reward_trajectories(chosen, rejected)
    assert [t.name for t in fig.data] == [
        "chosen · it 0",
        "rejected · it 0",
        "chosen · it 1",
        "rejected · it 1",
    ]
    assert list(fig.data[0].x) == [1, 2] and list(fig.data[0].y) == [0.1, 0.2]
    assert list(fig.data[1].y) == [-0.1, -0.3]
    assert fig.data[0].line.color == theme.CHOSEN and fig.data[1].line.color == theme.REJECTED
    assert fig.data[0].opacity < fig.data[2].opacity  # later iterations stand out
    assert "nats" in fig.layout.yaxis.title.text


def test_reward_trajectories_empty():
    empty = pd.DataFrame(columns=["iteration", "step", "value"])
    assert len(charts.reward_trajectories(empty, empty).data) == 0


def test_s_ref_histogram_splits_agreement_and_annotates_rate():
    s_ref = [2.0, 1.0, -1.0, 0.5, None, 0.0, float("nan"), 3.0]
    fig = charts.s_ref_histogram(s_ref, bins=4)
    agree, disagree = fig.data
    assert sorted(agree.x) == [0.5, 1.0, 2.0, 3.0]
    assert sorted(disagree.x) == [-1.0, 0.0]  # s_ref = 0 is not agreement
    assert agree.marker.color == theme.CHOSEN and disagree.marker.color == theme.REJECTED
    # Both parts share the same bins: [-1, 3] in 4 bins of width 1, the end half a bin past the maximum.
    assert agree.xbins.start == disagree.xbins.start == -1.0
    assert agree.xbins.size == disagree.xbins.size == 1.0
    assert agree.xbins.end == disagree.xbins.end == 3.5
    # 4 of the 6 finite values are > 0.
    assert "agreement P(s_ref > 0) = 66.7% (n = 6)" in _annotation_texts(fig)


def test_agreement_rate_edge_cases():
    assert charts.agreement_rate([1.0, -1.0]) == 0.5
    assert math.isnan(charts.agreement_rate([]))


def test_gradient_weight_histogram_fixed_unit_range_and_mean():
    fig = charts.gradient_weight_histogram([0.25, 0.5, 0.75], bins=4)
    (hist,) = fig.data
    assert list(hist.x) == [0.25, 0.5, 0.75]
    assert (hist.xbins.start, hist.xbins.end, hist.xbins.size) == (0.0, 1.125, 0.25)
    assert "mean w = 0.500 (n = 3)" in _annotation_texts(fig)
    assert tuple(fig.layout.xaxis.range) == (0.0, 1.0)


def test_gradient_weight_histogram_spans_ipo_weights_outside_the_unit_range():
    # IPO's w = 1 − 2β(s_θ − s_ref) can be negative once the margin passes its target.
    fig = charts.gradient_weight_histogram([-0.5, 0.5, 1.0], bins=3)
    (hist,) = fig.data
    assert (hist.xbins.start, hist.xbins.size) == (-0.5, 0.5)
    assert fig.layout.xaxis.range is None
    assert "mean w = 0.333 (n = 3)" in _annotation_texts(fig)


def test_length_vs_logprob_scatter_and_correlation():
    pairs = pd.DataFrame(
        {
            "chosen_length": [10, 20],
            "rejected_length": [30, 40],
            "ref_chosen_logps": [-10.0, -20.0],
            "ref_rejected_logps": [-30.0, -40.0],
        }
    )
    fig = charts.length_vs_logprob(pairs)
    chosen, rejected = fig.data
    assert list(chosen.x) == [10.0, 20.0] and list(chosen.y) == [-10.0, -20.0]
    assert list(rejected.x) == [30.0, 40.0] and list(rejected.y) == [-30.0, -40.0]
    assert chosen.marker.color == theme.CHOSEN and rejected.marker.color == theme.REJECTED
    # y = -x exactly, so r = -1.
    assert "Pearson r = -1.00" in _annotation_texts(fig)
    assert fig.layout.xaxis.title.text == "Response length (tokens)"


def test_length_vs_logprob_missing_columns_is_empty():
    assert len(charts.length_vs_logprob(pd.DataFrame({"chosen_length": [1]})).data) == 0


def test_length_histograms_share_bins_and_report_means():
    fig = charts.length_histograms([100, 300], [200, 600], unit="chars", bins=5)
    chosen, rejected = fig.data
    assert chosen.name == "chosen (mean 200)" and rejected.name == "rejected (mean 400)"
    assert chosen.xbins.start == rejected.xbins.start == 100.0
    assert chosen.xbins.size == rejected.xbins.size == 100.0
    assert fig.layout.barmode == "overlay"
    assert fig.layout.xaxis.title.text == "Response length (chars)"
    with pytest.raises(ValueError, match="unit"):
        charts.length_histograms([1], [2], unit="words")


def test_sweep_heatmap_pivots_and_averages_duplicates():
    frame = pd.DataFrame(
        [
            {"alpha": 0.05, "lambda_": 0.2, "lc_win_rate": 10.0},
            {"alpha": 0.03, "lambda_": 0.2, "lc_win_rate": 8.0},
            {"alpha": 0.05, "lambda_": 0.5, "lc_win_rate": 12.0},
            {"alpha": 0.05, "lambda_": 0.5, "lc_win_rate": 14.0},  # same point twice → mean 13
        ]
    )
    fig = charts.sweep_heatmap(frame, x="alpha", y="lambda_")
    (heat,) = fig.data
    assert list(heat.x) == ["0.03", "0.05"]
    assert list(heat.y) == ["0.2", "0.5"]
    assert [list(row) for row in heat.z] == [[8.0, 10.0], [None, 13.0]]
    assert fig.layout.xaxis.title.text == "alpha" and fig.layout.yaxis.title.text == "lambda_"


def test_sweep_heatmap_without_results_is_empty():
    frame = pd.DataFrame({"alpha": [0.1], "lambda_": [0.2], "lc_win_rate": [math.nan]})
    assert len(charts.sweep_heatmap(frame, x="alpha", y="lambda_").data) == 0


def test_metric_curves_one_line_per_series_thinned():
    frame = pd.DataFrame(
        {
            "series": ["run a"] * 1000 + ["run b"] * 3,
            "step": list(range(1000)) + [0, 1, 2],
            "value": list(np.arange(1000) * 0.5) + [1.0, 2.0, 3.0],
        }
    )
    fig = charts.metric_curves(frame, title="loss", y_title="Loss (nats)", max_points_per_series=100)
    a, b = fig.data
    assert a.name == "run a" and b.name == "run b"
    assert len(a.x) == 100 and a.x[0] == 0 and a.x[-1] == 999
    assert list(b.y) == [1.0, 2.0, 3.0]


def test_thin_keeps_ends_and_rejects_tiny_limits():
    frame = pd.DataFrame({"step": range(10)})
    # linspace(0, 9, 3) = [0, 4.5, 9]; numpy rounds half to even → row 4.
    assert list(charts.thin(frame, 3)["step"]) == [0, 4, 9]
    assert len(charts.thin(frame, 20)) == 10
    with pytest.raises(ValueError, match="max_points"):
        charts.thin(frame, 1)


# ----------------------------------------------------------------------------- uncertainty and length


def test_win_rate_points_carry_error_bars_of_1_96_se_and_theta_labels():
    frame = pd.DataFrame(
        [
            {"run": "aipo", "iteration": 0, "label": "θ_0", "avg_length": 900.0, "win_rate": 10.0,
             "win_rate_se": 2.0, "lc_win_rate": 12.0, "lc_win_rate_se": 3.0},
            {"run": "aipo", "iteration": 1, "label": "θ_1", "avg_length": 1200.0, "win_rate": 20.0,
             "win_rate_se": 4.0, "lc_win_rate": math.nan, "lc_win_rate_se": math.nan},
        ]
    )  # fmt: skip
    lc, raw = charts.win_rate_vs_length(frame).data
    assert list(raw.error_y.array) == pytest.approx([1.96 * 2.0, 1.96 * 4.0])
    assert lc.error_y.array[0] == pytest.approx(1.96 * 3.0) and math.isnan(lc.error_y.array[1])
    assert list(lc.text) == ["θ_0", "θ_1"]
    assert "95% interval" in " ".join(_annotation_texts(charts.win_rate_vs_length(frame)))


def test_win_rate_chart_says_why_lc_is_missing():
    frame = pd.DataFrame(
        [
            {"run": "a", "iteration": 0, "avg_length": 900.0, "win_rate": 10.0, "lc_win_rate": math.nan,
             "lc_unavailable_reason": "too few judgements (32 < 50)"},
            {"run": "a", "iteration": 1, "avg_length": 950.0, "win_rate": 12.0, "lc_win_rate": 11.0,
             "lc_unavailable_reason": None},
        ]
    )  # fmt: skip
    assert "LC n/a: too few judgements (32 < 50)" in _annotation_texts(charts.win_rate_vs_length(frame))
    with_lc = frame.assign(lc_win_rate=[9.0, 11.0])
    assert not any(t.startswith("LC n/a") for t in _annotation_texts(charts.win_rate_vs_length(with_lc)))


@pytest.mark.parametrize(
    ("length_pct", "lc_change", "se", "flag"),
    [
        (25.0, 1.0, 2.0, True),  # longer, LC change inside its 95% interval (1.0 ≤ 3.92)
        (25.0, -5.0, 1.0, True),  # longer, LC down
        (25.0, 3.92, 2.0, True),  # exactly on the interval's edge still counts as noise
        (25.0, 4.0, 2.0, False),  # longer and LC up beyond noise: length bought real wins
        (10.0, -5.0, 1.0, False),  # +10% is not "more than 10%"
        (-20.0, -5.0, 1.0, False),  # shorter
        (25.0, None, None, None),  # LC unavailable: cannot decide
        (25.0, 1.0, math.nan, None),
        (math.nan, 1.0, 1.0, None),
    ],
)
def test_length_exploitation_rule(length_pct, lc_change, se, flag):
    assert charts.length_exploitation_flag(length_pct, lc_change, se) is flag


def _deltas(rows):
    columns = ["run", "policy_index", "length_change_pct", "lc_change", "lc_change_se", "win_rate_change",
               "win_rate_change_se"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def test_length_exploitation_chart_marks_flagged_points_with_intervals():
    deltas = _deltas([("dpo", 1, 30.0, 0.5, 2.0, 8.0, 3.0), ("dpo", 2, 60.0, -1.0, 2.0, 15.0, 3.0),
                      ("aipo", 1, 5.0, 4.0, 1.0, 4.0, 1.0)])  # fmt: skip
    fig = charts.length_exploitation(deltas)
    names = [t.name for t in fig.data]
    assert names == ["dpo · Δ LC", "dpo · Δ raw", "dpo · length exploitation", "aipo · Δ LC", "aipo · Δ raw"]
    lc = fig.data[0]
    assert list(lc.x) == [30.0, 60.0] and list(lc.text) == ["θ_1", "θ_2"]
    assert list(lc.error_y.array) == pytest.approx([3.92, 3.92])
    assert list(fig.data[1].error_y.array) == pytest.approx([1.96 * 3.0] * 2)
    assert list(fig.data[2].x) == [30.0, 60.0]  # both dpo points: longer, LC within noise
    assert charts.length_exploitation(_deltas([])).layout.annotations[0].text.startswith("Needs θ_0")


def test_paired_differences_draw_1_96_se_and_grey_within_noise():
    items = [
        {
            "run_a": 1,
            "run_b": 2,
            "difference": 6.0,
            "difference_se": 4.0,
            "within_noise": True,
            "n_shared": 32,
        },
        {
            "run_a": 1,
            "run_b": 3,
            "difference": 20.0,
            "difference_se": 4.0,
            "within_noise": False,
            "n_shared": 32,
        },
        {
            "run_a": 2,
            "run_b": 3,
            "difference": None,
            "difference_se": None,
            "within_noise": None,
            "n_shared": 0,
        },
    ]
    (trace,) = charts.paired_differences(items).data
    assert list(trace.y) == ["#2 − #1", "#3 − #1"]
    assert list(trace.error_x.array) == pytest.approx([7.84, 7.84])
    assert list(trace.marker.color) == [theme.NEUTRAL, theme.ACCENT]


def test_sweep_heatmap_cells_read_rate_plus_minus_se():
    frame = pd.DataFrame(
        [
            {"alpha": 0.05, "lambda_": 0.2, "lc_win_rate": 10.0, "lc_win_rate_se": 3.0},
            {"alpha": 0.03, "lambda_": 0.2, "lc_win_rate": 8.0, "lc_win_rate_se": math.nan},
            {"alpha": 0.05, "lambda_": 0.5, "lc_win_rate": 12.0, "lc_win_rate_se": 3.0},
            {"alpha": 0.05, "lambda_": 0.5, "lc_win_rate": 14.0, "lc_win_rate_se": 4.0},  # √(9+16)/2
        ]
    )
    (heat,) = charts.sweep_heatmap(frame, x="alpha", y="lambda_", se="lc_win_rate_se").data
    assert [list(row) for row in heat.text] == [["8.0", "10.0 ± 3.0"], ["", "13.0 ± 2.5"]]
