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
    gradient_weights,
    histogram,
    length_distributions,
    length_logprob_correlation,
    s_ref_distribution,
)


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


def test_gradient_weights_hand_computed() -> None:
    # β=0.1, α=0.05: z = 0.1·(1.05·5 − 2) = 0.325 and 0.1·(1.05·(−10) + 10) = −0.05.
    w = gradient_weights(np.array([5.0, -10.0]), np.array([2.0, -10.0]), beta=0.1, alpha=0.05)
    assert w == pytest.approx([1 / (1 + math.exp(-0.325)), 1 / (1 + math.exp(0.05))])
    assert w == pytest.approx([0.580543, 0.487503], abs=1e-6)


def test_analyze_pairs_bundles_everything_as_json() -> None:
    got = analyze_pairs(PAIRS, s_theta=[5.0, -10.0, 0.0, -5.0], beta=0.1, alpha=0.0, similarity=False)
    json.dumps(got)  # storable as-is
    assert got["n_pairs"] == 4
    assert got["gradient_weight"]["mean"] == pytest.approx(0.5)  # s_θ = s_ref and α = 0 -> σ(0)
    assert sum(got["gradient_weight"]["histogram"]["counts"]) == 4
    assert got["similarity"] is None
    with pytest.raises(ValueError, match="beta"):
        analyze_pairs(PAIRS, s_theta=[0.0] * 4, similarity=False)
    with pytest.raises(ValueError, match="s_theta"):
        analyze_pairs(PAIRS, s_theta=[0.0] * 3, beta=0.1, similarity=False)


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
