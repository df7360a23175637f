"""Pair diagnostics on hand-made pairs with hand-computed expectations, plus the real MiniLM."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from aipo_core.analysis import (
    analyze_pairs,
    chosen_rejected_similarity,
    cosine_similarities,
    default_embedder,
    describe,
    histogram,
    length_distributions,
    length_logprob_correlation,
    objective_diagnostics,
    pair_objective_values,
    rate_with_interval,
    s_ref_distribution,
    s_ref_length_gap_correlation,
)

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def wilson(k: int, n: int) -> tuple[float, float]:
    """Wilson score 95% interval, written out."""
    p = k / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 / (1 + Z95**2 / n) * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n**2))
    return centre - half, centre + half


def _pair(pid: str, chosen: str, rejected: str, lc: int, lr: int, ref_c: float, ref_r: float) -> dict:
    return {
        "id": pid,
        "prompt": [{"role": "user", "content": f"question {pid}"}],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        "score_chosen": 1.0,
        "score_rejected": 0.0,
        "chosen_length": lc,
        "rejected_length": lr,
        "chosen_chars": len(chosen),
        "rejected_chars": len(rejected),
        "ref_chosen_logps": ref_c,
        "ref_rejected_logps": ref_r,
        "s_ref": ref_c - ref_r,
    }


# log-prob = -0.5 * length exactly, so length and log-prob correlate perfectly negatively and
# s_ref = -0.5 * (chosen_length - rejected_length) = [5, -10, 0, -5].
PAIRS = [
    _pair("a", "abcd", "abcdefgh", 10, 20, -5.0, -10.0),
    _pair("b", "abcdef", "ab", 30, 10, -15.0, -5.0),
    _pair("c", "abc", "abc", 20, 20, -10.0, -10.0),
    _pair("d", "abcdefghij", "abcdef", 40, 30, -20.0, -15.0),
]


def test_describe_and_histogram() -> None:
    assert describe([1, 2, 3, 10]) == {
        "n": 4,
        "mean": 4.0,
        "median": 2.5,
        "std": math.sqrt(12.5),
        "min": 1.0,
        "max": 10.0,
    }
    assert describe([])["mean"] is None
    assert histogram([5, -10, 0, -5], bins=3) == {"edges": [-10.0, -5.0, 0.0, 5.0], "counts": [1, 1, 2]}


def test_length_distributions_share_edges() -> None:
    got = length_distributions(PAIRS, bins=3)
    tokens = got["tokens"]
    assert (tokens["chosen"]["mean"], tokens["chosen"]["median"]) == (25.0, 25.0)
    assert (tokens["rejected"]["mean"], tokens["rejected"]["median"]) == (20.0, 20.0)
    assert tokens["mean_difference"] == 5.0
    assert (
        tokens["chosen"]["histogram"]["edges"] == tokens["rejected"]["histogram"]["edges"] == [10, 20, 30, 40]
    )
    assert tokens["chosen"]["histogram"]["counts"] == [1, 1, 2]
    assert tokens["rejected"]["histogram"]["counts"] == [1, 2, 1]
    assert got["chars"]["chosen"]["mean"] == (4 + 6 + 3 + 10) / 4
    assert got["chars"]["rejected"]["median"] == 4.5


def test_chars_fall_back_to_the_response_text() -> None:
    stripped = [{k: v for k, v in p.items() if not k.endswith("_chars")} for p in PAIRS]
    assert length_distributions(stripped)["chars"] == length_distributions(PAIRS)["chars"]


def test_s_ref_distribution_and_agreement() -> None:
    got = s_ref_distribution(PAIRS, bins=3)
    assert got["mean"] == -2.5
    assert got["agreement_rate"] == 0.25  # only s_ref = 5 is > 0; the tie at 0 does not agree
    assert got["agreement_ci95"] == pytest.approx(wilson(1, 4))
    assert got["histogram"]["counts"] == [1, 1, 2]
    recomputed = s_ref_distribution([{k: v for k, v in p.items() if k != "s_ref"} for p in PAIRS], bins=3)
    assert recomputed == got


def test_length_logprob_correlation() -> None:
    perfect = length_logprob_correlation(PAIRS)
    assert perfect["n"] == 8
    assert perfect["pearson"] == pytest.approx(-1.0)
    assert perfect["spearman"] == pytest.approx(-1.0)
    assert perfect["points"]["chosen"] == [True] * 4 + [False] * 4

    # lengths [1, 2, 3, 4] vs log-probs [-1, -2, -3, -10]: Pearson = -14/sqrt(5*50), Spearman = -1.
    skewed = [_pair("x", "a", "b", 1, 3, -1.0, -3.0), _pair("y", "c", "d", 2, 4, -2.0, -10.0)]
    got = length_logprob_correlation(skewed)
    assert got["pearson"] == pytest.approx(-14 / math.sqrt(250))
    assert got["spearman"] == pytest.approx(-1.0)
    # 3 of 8 points: indices round(linspace(0, 7, 3)) = 0, 4, 7.
    assert length_logprob_correlation(PAIRS, max_points=3)["points"]["length"] == [10, 20, 30]


def test_correlation_undefined_for_constant_lengths() -> None:
    flat = [_pair(str(i), "a", "b", 5, 5, -float(i), -1.0) for i in range(3)]
    assert length_logprob_correlation(flat)["pearson"] is None


def test_rate_with_interval_is_wilson() -> None:
    got = rate_with_interval(3, 10)
    assert got["rate"] == 0.3 and got["n"] == 10
    assert got["ci95"] == pytest.approx(wilson(3, 10))
    assert got["ci95"] == pytest.approx([0.1078, 0.6032], abs=1e-4)
    assert rate_with_interval(0, 0) == {"rate": None, "n": 0, "ci95": None}


# Fig. 6 by hand: length gaps [−2, −1, 0, 1, 2] against s_ref [1, 3, 2, −1, 0].
# Ranks of s_ref: [3, 5, 4, 1, 2]; d = [−2, −3, −1, 3, 3], Σd² = 32, ρ = 1 − 6·32/(5·24) = −0.6.
# Pearson: Σgap·(s − 1) = −6, Σgap² = 10, Σ(s − 1)² = 10, r = −0.6.
FIG6 = [
    _pair(str(i), "a", "b", 10 + gap, 10, s_ref - 20.0, -20.0)
    for i, (gap, s_ref) in enumerate(zip([-2, -1, 0, 1, 2], [1.0, 3.0, 2.0, -1.0, 0.0], strict=True))
]


def test_s_ref_length_gap_correlation_hand_computed() -> None:
    from scipy.stats import t as student_t

    got = s_ref_length_gap_correlation(FIG6)
    assert got["n"] == 5 and got["unavailable"] is None
    spearman, pearson = got["spearman"], got["pearson"]
    assert spearman["rho"] == pytest.approx(-0.6)
    assert pearson["r"] == pytest.approx(-0.6)
    # Both p-values: t = r·√((n − 2)/(1 − r²)) on n − 2 = 3 degrees of freedom, two-sided.
    t_stat = 0.6 * math.sqrt(3 / 0.64)
    assert spearman["p_value"] == pytest.approx(2 * student_t.sf(t_stat, 3))
    assert pearson["p_value"] == pytest.approx(2 * student_t.sf(t_stat, 3))
    # Fisher z: Spearman with Bonett–Wright SE √((1 + ρ²/2)/(n − 3)), Pearson with 1/√(n − 3).
    z = math.atanh(-0.6)
    half_s = Z95 * math.sqrt((1 + 0.36 / 2) / 2)
    half_p = Z95 / math.sqrt(2)
    assert spearman["ci95"] == pytest.approx([math.tanh(z - half_s), math.tanh(z + half_s)])
    assert pearson["ci95"] == pytest.approx([math.tanh(z - half_p), math.tanh(z + half_p)])
    assert spearman["ci95"] == pytest.approx([-0.9756, 0.6709], abs=1e-4)


def test_s_ref_length_gap_correlation_unavailable_with_reason() -> None:
    assert "at least 3 pairs" in s_ref_length_gap_correlation(FIG6[:2])["unavailable"]
    flat = [_pair(str(i), "a", "b", 5, 5, -float(i), -1.0) for i in range(4)]
    got = s_ref_length_gap_correlation(flat)
    assert got["spearman"] is None and "same for every pair" in got["unavailable"]
    assert s_ref_length_gap_correlation(FIG6[:3])["spearman"]["ci95"] is None  # n − 3 = 0


# Policy log-probs for PAIRS under a "trained" policy: s_θ = [7, −10, 2, −5].
POLICY_CHOSEN = [-4.0, -15.0, -9.0, -21.0]
POLICY_REJECTED = [-11.0, -5.0, -11.0, -16.0]


def test_objective_diagnostics_aipo_by_hand() -> None:
    # r = β(logπ − 1.05·logπ_ref), β = 0.1; margins 0.1·(s_θ − 1.05·s_ref):
    # s_ref = [5, −10, 0, −5] → [0.175, 0.05, 0.2, 0.025], all > 0 → accuracy 4/4.
    got = objective_diagnostics(
        PAIRS,
        POLICY_CHOSEN,
        POLICY_REJECTED,
        objective="aipo",
        hyperparameters={"beta": 0.1, "alpha": 0.05, "lambda_": 0.2},
        bins=4,
    )
    margins = [0.175, 0.05, 0.2, 0.025]
    assert got["margins"]["mean"] == pytest.approx(sum(margins) / 4)
    # chosen: 0.1·(−4 + 5.25), 0.1·(−15 + 15.75), 0.1·(−9 + 10.5), 0.1·(−21 + 21)
    assert got["rewards_chosen"]["mean"] == pytest.approx((0.125 + 0.075 + 0.15 + 0.0) / 4)
    assert got["accuracy"] == {"rate": 1.0, "n": 4, "ci95": pytest.approx(wilson(4, 4))}
    weights = [sigmoid(-m) for m in margins]  # Eq. 8: σ(β((1+α)s_ref − s_θ))
    assert got["gradient_weight"]["mean"] == pytest.approx(sum(weights) / 4)
    assert got["gradient_weight"]["histogram"]["edges"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert got["gradient_weight"]["histogram"]["counts"] == [0, 4, 0, 0]
    assert got["gradient_weight"]["range"] == [0.0, 1.0]
    assert got["weight_formula"] == "σ(β((1+α)s_ref − s_θ))"
    json.dumps(got)


def test_objective_diagnostics_simpo_and_ipo_are_not_dpo() -> None:
    simpo = objective_diagnostics(
        PAIRS, POLICY_CHOSEN, POLICY_REJECTED, objective="simpo", hyperparameters={"beta": 2.0, "gamma": 0.5}
    )
    # r = (β/|y|)·logπ: chosen 2·(−4/10), 2·(−15/30), 2·(−9/20), 2·(−21/40); rejected 2·(−11/20), 2·(−5/10),
    # 2·(−11/20), 2·(−16/30). Margins [0.3, 0.0, 0.2, 1/60 ≈ 0.0167]; accuracy 3/4 (the tie is no win).
    margins = [0.3, 0.0, 0.2, 2 * (-21 / 40 + 16 / 30)]
    assert simpo["rewards_chosen"]["mean"] == pytest.approx(2 * (-0.4 - 0.5 - 0.45 - 0.525) / 4)
    assert simpo["accuracy"]["rate"] == 0.75
    assert simpo["gradient_weight"]["mean"] == pytest.approx(sum(sigmoid(0.5 - m) for m in margins) / 4)

    ipo = objective_diagnostics(
        PAIRS, POLICY_CHOSEN, POLICY_REJECTED, objective="ipo", hyperparameters={"beta": 0.1}, bins=2
    )
    # w = 1 − 2β(s_θ − s_ref), s_θ − s_ref = [2, 0, 2, 0] → [0.6, 1, 0.6, 1]; unbounded, so the
    # histogram spans the data.
    assert ipo["gradient_weight"]["mean"] == pytest.approx(0.8)
    assert ipo["gradient_weight"]["range"] is None
    assert ipo["gradient_weight"]["histogram"]["edges"] == pytest.approx([0.6, 0.8, 1.0])


def test_pair_objective_values_per_pair_rdpo() -> None:
    got = pair_objective_values(
        PAIRS, POLICY_CHOSEN, POLICY_REJECTED, objective="rdpo", hyperparameters={"beta": 0.1, "alpha": 0.01}
    )
    assert [g["id"] for g in got] == ["a", "b", "c", "d"]
    # Pair b: s_θ − s_ref = 0, |y_w| − |y_l| = 20: w = σ(−0.01·20) (Park et al. Eq. 9).
    b = got[1]
    assert b["s_theta"] == -10.0 and b["policy_chosen_logps"] == -15.0
    assert b["reward_chosen"] == pytest.approx(0.1 * (-15.0 + 15.0) + 0.01 * 30)
    assert b["reward_rejected"] == pytest.approx(0.1 * (-5.0 + 5.0) + 0.01 * 10)
    assert b["gradient_weight"] == pytest.approx(sigmoid(-0.2))
    json.dumps(got)
    with pytest.raises(ValueError, match="policy_rejected_logps: expected 4 values"):
        pair_objective_values(
            PAIRS, POLICY_CHOSEN, POLICY_REJECTED[:3], objective="dpo", hyperparameters={"beta": 0.1}
        )


def test_analyze_pairs_bundles_everything_as_json() -> None:
    got = analyze_pairs(
        PAIRS,
        policy_logps=(POLICY_CHOSEN, POLICY_REJECTED),
        objective="dpo",
        hyperparameters={"beta": 0.1},
        similarity=False,
    )
    json.dumps(got)  # storable as-is
    assert got["n_pairs"] == 4
    # DPO, s_θ − s_ref = [2, 0, 2, 0]: w = σ(−0.2), σ(0), σ(−0.2), σ(0)
    assert got["objective"]["gradient_weight"]["mean"] == pytest.approx((sigmoid(-0.2) + 0.5) / 2)
    assert sum(got["objective"]["gradient_weight"]["histogram"]["counts"]) == 4
    assert got["s_ref_length_gap"]["spearman"]["rho"] == pytest.approx(-1.0)  # s_ref = −0.5·gap
    assert got["similarity"] is None
    assert analyze_pairs(PAIRS, similarity=False)["objective"] is None
    with pytest.raises(ValueError, match="objective"):
        analyze_pairs(PAIRS, policy_logps=(POLICY_CHOSEN, POLICY_REJECTED), similarity=False)


def test_missing_field_is_named() -> None:
    broken = [dict(PAIRS[0])]
    del broken[0]["chosen_length"]
    with pytest.raises(ValueError, match=r"pairs\[0\] \(a\): missing field 'chosen_length'"):
        length_distributions(broken)


class _TableEmbedder:
    """A fixed text -> vector table: cosine similarities are then known exactly."""

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = table

    def encode(self, sentences: list[str]) -> np.ndarray:
        return np.array([self.table[s] for s in sentences])


def test_similarity_with_an_injected_embedder() -> None:
    embedder = _TableEmbedder({"x": [1.0, 0.0], "y": [3.0, 3.0], "z": [0.0, 2.0]})
    pairs = [_pair("1", "x", "y", 1, 1, 0.0, 0.0), _pair("2", "x", "z", 1, 1, 0.0, 0.0)]
    got = chosen_rejected_similarity(pairs, embedder)
    assert got["mean"] == pytest.approx(math.sqrt(0.5) / 2)
    assert got["max"] == pytest.approx(math.sqrt(0.5))


def test_real_minilm_similarity() -> None:
    embedder = default_embedder()
    assert default_embedder() is embedder  # loaded once
    sims = cosine_similarities(
        embedder,
        ["Paris is the capital of France.", "Paris is the capital of France."],
        ["Paris is the capital of France.", "Photosynthesis converts light into chemical energy."],
    )
    assert sims[0] == pytest.approx(1.0, abs=1e-4)
    assert sims[1] < 0.5 < sims[0]
    got = analyze_pairs(PAIRS[:2], embedder=embedder)
    assert -1.0 <= got["similarity"]["mean"] <= 1.0
