"""Win rate / LC win rate: published AlpacaEval 2.0 numbers, calibration, unidentifiable inputs.

Everything here reads data shipped in the repository (tests/data/alpaca_eval, see its SOURCES.md).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.special import expit

from aipo_core.data.benchmarks import load_benchmark
from aipo_core.winrate import (
    ALPACA_EVAL_GPT4_TURBO,
    MIN_JUDGEMENTS,
    Judgements,
    normalize_preferences,
    pooled_win_rates,
    slope_prior_for,
    win_rates,
    winrate_from_annotations_file,
)
from tests.data.alpaca_eval.published import (
    BASELINE,
    MODELS,
    annotations,
    leaderboard,
    write_alpaca_eval_annotations,
)


def _judgements(model: str) -> Judgements:
    rows = annotations(model)
    return Judgements(
        preferences=[float(r["preference"]) if r["preference"] else None for r in rows],
        output_chars=[int(r["output_chars"]) for r in rows],
        baseline_chars=[int(r["baseline_chars"]) for r in rows],
        prompt_ids=[r["index"] for r in rows],
    )


def _annotator_judge(model: str) -> str:
    (annotator,) = {row["annotator"] for row in annotations(model)}
    return f"alpaca_eval:{annotator}"


@pytest.mark.parametrize("model", MODELS)
def test_matches_published_alpaca_eval_numbers(model: str) -> None:
    """Raw metrics exact; LC (the annotator's published slope) within 2 points of AlpacaEval's."""
    published = leaderboard()[model]
    judged = _judgements(model)
    got = win_rates(
        judged.preferences,
        judged.output_chars,
        judged.baseline_chars,
        judge=_annotator_judge(model),
        baseline=BASELINE,
    ).to_dict()

    assert got["win_rate"] == pytest.approx(float(published["win_rate"]), abs=1e-9)
    assert got["win_rate_se"] == pytest.approx(float(published["standard_error"]), abs=1e-9)
    assert got["discrete_win_rate"] == pytest.approx(float(published["discrete_win_rate"]), abs=1e-9)
    assert (got["n_wins"], got["n_wins_base"], got["n_draws"], got["n"]) == (
        int(published["n_wins"]),
        int(published["n_wins_base"]),
        int(published["n_draws"]),
        int(published["n_total"]),
    )
    assert int(got["avg_length"]) == int(published["avg_length"])
    assert got["judge"] == ALPACA_EVAL_GPT4_TURBO and got["slope_source"] == "prior"
    assert got["length_slope"] == 1.51 and got["length_slope_se"] == 0.39
    assert abs(got["lc_win_rate"] - float(published["length_controlled_winrate"])) < 2.0
    # The prior's spread (sd 0.39 across AlpacaEval's models) is part of the SE.
    assert 2.5 < got["lc_win_rate_se"] < 6.0
    assert got["lc_unavailable_reason"] is None


def test_prior_applies_only_to_the_judge_and_baseline_it_was_measured_on() -> None:
    assert slope_prior_for(ALPACA_EVAL_GPT4_TURBO, BASELINE) is not None
    assert slope_prior_for(ALPACA_EVAL_GPT4_TURBO, "gpt-4-0314") is None
    assert slope_prior_for("alpaca_eval:alpaca_eval_llama3_70b_fn", BASELINE) is None
    assert slope_prior_for("llm_judge:smollm2-135m-instruct", BASELINE) is None
    assert slope_prior_for(None, None) is None


def test_same_judgements_without_the_prior_estimate_the_slope_pooled() -> None:
    """A judge without a published slope: γ estimated once from all three models' judgements."""
    reports = pooled_win_rates([_judgements(m) for m in MODELS], judge="some-other-judge", baseline=BASELINE)
    slopes = {(r.length_slope, r.length_slope_se) for r in reports}
    assert len(slopes) == 1  # one shared slope
    ((slope, slope_se),) = slopes
    assert 1.5 < slope < 2.8 and 0.2 < slope_se < 0.5  # AlpacaEval's own per-model slopes: 1.90–2.14
    for r in reports:
        assert r.slope_source == "estimated" and r.lc_pooled_n == 3 * 805 and r.lc_pooled_evaluations == 3
        assert r.lc_win_rate is not None and r.lc_win_rate > r.win_rate
        assert r.lc_win_rate_se > 0
    standard, concise, verbose = (r.lc_win_rate for r in reports)
    assert concise < standard < verbose  # the published order (15.8 < 19.3 < 22.0)


def _synthetic(slope: float, n: int, rng: np.random.Generator) -> tuple[Judgements, float]:
    """Judgements drawn from the length GLM: logit P(win) = b + γ·tanh(Δ/σ) + δ·z, and the true LC.

    Baseline lengths are real AlpacaEval reference answers (GPT-4-Turbo); outputs are a log-normal
    fraction of them (median 0.6), so most are shorter, as a small model's are, and LC extrapolates
    to equal lengths. The true LC is about 27%.
    """
    baseline = BASELINE_CHARS if n == BASELINE_CHARS.size else rng.choice(BASELINE_CHARS, n, replace=False)
    output = np.maximum(1.0, np.round(baseline * np.exp(rng.normal(np.log(0.6), 0.5, n))))
    delta = output - baseline
    length = np.tanh(delta / delta.std(ddof=1))
    z = (baseline - baseline.mean()) / baseline.std(ddof=1)
    strength, difficulty = -1.0, -0.3
    true_lc = 100.0 * float(expit(strength + difficulty * z).mean())
    wins = rng.random(n) < expit(strength + slope * length + difficulty * z)
    return Judgements(1.0 + wins.astype(float), output, baseline), true_lc


BASELINE_CHARS = np.array([len(item.baseline_output or "") for item in load_benchmark("alpaca_eval")], float)
DATASETS = 200


@pytest.mark.parametrize("n", [805, 128])
@pytest.mark.parametrize("slope", [0.0, 1.5, 3.0])
def test_lc_interval_is_calibrated_on_synthetic_judgements(slope: float, n: int) -> None:
    """The 95% interval covers the true LC in >= 90% of 200 datasets (unavailable counts as a miss)."""
    rng = np.random.default_rng([int(slope * 10), n])
    errors, covered = [], 0
    for _ in range(DATASETS):
        judged, true_lc = _synthetic(slope, n, rng)
        report = win_rates(judged.preferences, judged.output_chars, judged.baseline_chars, judge="synthetic")
        if report.lc_win_rate is None:
            continue
        assert report.slope_source == "estimated"
        errors.append(report.lc_win_rate - true_lc)
        covered += abs(report.lc_win_rate - true_lc) <= 1.96 * report.lc_win_rate_se
    assert covered / DATASETS >= 0.90, (covered, len(errors))
    if n == 805:
        assert len(errors) == DATASETS
        assert abs(float(np.mean(errors))) <= 2.0
        assert float(np.mean(np.abs(errors))) <= 2.5


def test_lc_is_unavailable_rather_than_wrong_when_the_data_cannot_identify_it() -> None:
    rng = np.random.default_rng(7)
    baseline = rng.integers(500, 1500, size=200).astype(float)
    output = baseline + rng.normal(0, 300, size=200)

    def reason(prefs, out=output, base=baseline, **kw) -> str | None:
        report = win_rates(prefs, out, base, judge="llm_judge:some-model", **kw)
        assert (report.lc_win_rate is None) == (report.lc_unavailable_reason is not None)
        assert report.lc_win_rate_se is None or report.lc_win_rate is not None
        return report.lc_unavailable_reason

    some = rng.choice([1.0, 2.0], size=200)
    assert "too few judgements" in reason(some[:32], output[:32], baseline[:32])
    assert str(MIN_JUDGEMENTS) in reason(some[:32], output[:32], baseline[:32])
    assert "favour the model" in reason([2.0] * 200)
    assert "favour the baseline" in reason([1.0] * 200)
    assert "perfect separation" in reason(np.where(output > baseline, 2.0, 1.0))
    assert "same +50 characters" in reason(some, baseline + 50)
    assert "same +50 characters" in reason(some, baseline + 50 + rng.normal(0, 0.5, size=200))
    assert "too few wins or losses" in reason(np.where(np.arange(200) < 6, 2.0, 1.0))
    # Length differs on one prompt only: the fit puts γ ≈ -21 through that one judgement, where the
    # sandwich SE is ~1 but the information says it is not identified (SE above 1.5): no LC.
    one_differs = baseline.copy()
    one_differs[0] -= 900.0
    assert "length slope is not identified" in reason(some, one_differs)
    # The prior judge's slope is known: the same short input gets an LC (with a wide SE).
    prior = win_rates(some[:32], output[:32], baseline[:32], judge=ALPACA_EVAL_GPT4_TURBO, baseline=BASELINE)
    assert prior.lc_win_rate is not None and prior.slope_source == "prior"


def test_no_length_difference_leaves_nothing_to_control() -> None:
    """The published gpt4_1106_preview row: every judgement a tie, identical outputs -> 50 / 50."""
    lengths = [100, 2000, 350, 4000, 900]
    report = win_rates([1.5] * 5, lengths, lengths)
    assert report.win_rate == 50.0 and report.lc_win_rate == 50.0 and report.lc_win_rate_se == 0.0
    assert report.slope_source == "not_needed" and report.discrete_win_rate == 50.0
    mixed = win_rates([2.0, 1.0, 1.5, 2.0], [10, 20, 30, 40], [10, 20, 30, 40])
    assert mixed.lc_win_rate == mixed.win_rate and mixed.lc_win_rate_se == mixed.win_rate_se


def test_length_biased_judge_is_discounted() -> None:
    """A judge that prefers whichever answer is longer: LC well below the raw win rate."""
    rng = np.random.default_rng(1)
    baseline = rng.integers(500, 1500, size=400).astype(float)
    longer = np.arange(400) % 2 == 0
    output = np.where(longer, baseline + 1500, baseline - 300)
    report = win_rates(np.where(longer, 1.9, 1.1), output, baseline, judge="llm_judge:x")
    assert report.win_rate == pytest.approx(50.0)
    assert report.lc_win_rate < report.win_rate - 10
    assert report.length_slope > 1.51


def test_pooling_shares_the_slope_and_keeps_each_evaluation_apart() -> None:
    """θ_0 … θ_2 on the same 60 prompts by one judge: one slope, one LC per evaluation."""
    rng = np.random.default_rng(3)
    baseline = BASELINE_CHARS[:60]
    prompt_ids = [str(i) for i in range(60)]
    evaluations = []
    for strength in (-0.2, 0.3, 0.8):
        output = np.round(baseline * np.exp(rng.normal(np.log(0.8), 0.5, 60)))
        length = np.tanh((output - baseline) / (output - baseline).std(ddof=1))
        wins = rng.random(60) < expit(strength + 1.0 * length)
        evaluations.append(Judgements(1.0 + wins, output, baseline, prompt_ids))
    alone = pooled_win_rates(evaluations[:1], judge="j")[0]
    pooled = pooled_win_rates(evaluations, judge="j")
    assert alone.lc_win_rate is not None
    assert {r.length_slope for r in pooled} == {pooled[0].length_slope}
    assert pooled[0].length_slope_se < alone.length_slope_se
    assert [r.lc_pooled_n for r in pooled] == [180] * 3
    assert [r.n for r in pooled] == [60] * 3
    assert pooled[0].lc_win_rate < pooled[2].lc_win_rate

    # An evaluation with no win at all is reported unavailable; the others keep their LC.
    evaluations.append(Judgements([1.0] * 60, baseline * 0.5, baseline, prompt_ids))
    with_one_sided = pooled_win_rates(evaluations, judge="j")
    assert "favour the baseline" in with_one_sided[3].lc_unavailable_reason
    assert [r.lc_win_rate for r in with_one_sided[:3]] == pytest.approx([r.lc_win_rate for r in pooled])


def test_ties_count_half_and_legacy_zero_is_a_tie() -> None:
    report = win_rates([2.0, 1.0, 1.5, 0], [10, 10, 10, 10], [10, 10, 10, 10])
    assert report.win_rate == pytest.approx(50.0)
    assert (report.n_wins, report.n_wins_base, report.n_draws) == (1, 1, 2)


def test_tiny_inputs() -> None:
    single = win_rates([2.0], [120], [80])
    assert single.n == 1 and single.win_rate == 100.0
    assert math.isnan(single.win_rate_se)
    assert single.to_dict()["win_rate_se"] is None  # JSON has no NaN
    assert single.lc_win_rate is None and "favour the model" in single.lc_unavailable_reason


def test_missing_preferences_are_dropped_with_their_lengths() -> None:
    report = win_rates([2.0, None, float("nan"), 1.0], [100, 5, 6, 300], [200, 7, 8, 200])
    assert (report.n, report.n_missing) == (2, 2)
    assert report.avg_length == 200.0


def test_bad_input_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"preference\[1\]"):
        normalize_preferences([1.5, 3.0])
    with pytest.raises(ValueError, match="same length"):
        win_rates([1.5, 1.5], [1], [1, 2])
    with pytest.raises(ValueError, match="all missing"):
        win_rates([None], [1], [1])


def test_alpaca_eval_annotations_file_names_its_judge(tmp_path: Path) -> None:
    """The AlpacaEval JSON format: judge from `annotator`, baseline from `generator_1`."""
    path = write_alpaca_eval_annotations("gpt-3.5-turbo-1106_verbose", tmp_path / "annotations.json")
    got = winrate_from_annotations_file(path, format="alpaca_eval")
    published = leaderboard()["gpt-3.5-turbo-1106_verbose"]
    assert got["win_rate"] == pytest.approx(float(published["win_rate"]), abs=1e-9)
    assert got["judge"] == ALPACA_EVAL_GPT4_TURBO and got["slope_source"] == "prior"
    assert abs(got["lc_win_rate"] - float(published["length_controlled_winrate"])) < 2.0
    overridden = winrate_from_annotations_file(path, format="alpaca_eval", judge="llm_judge:other")
    assert overridden["slope_source"] == "estimated" and overridden["judge"] == "llm_judge:other"


def test_aipo_eval_jsonl_format(tmp_path: Path) -> None:
    records = [
        {"id": "a", "preference": 2.0, "output_chars": 300, "baseline_chars": 200, "judge": "llm_judge:m"},
        {"id": "b", "preference": 1.25, "output_chars": 100, "baseline_chars": 200, "judge": "llm_judge:m"},
    ]
    path = tmp_path / "alpaca_eval.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    got = winrate_from_annotations_file(path, format="aipo")
    assert got["win_rate"] == pytest.approx(62.5)
    assert got["avg_length"] == 200.0
    assert got["judge"] == "llm_judge:m" and got["lc_win_rate"] is None
    assert "too few judgements" in got["lc_unavailable_reason"]
    with pytest.raises(ValueError, match="format"):
        winrate_from_annotations_file(path, format="csv")
    (tmp_path / "broken.jsonl").write_text(json.dumps({"preference": 2.0}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="output_chars"):
        winrate_from_annotations_file(tmp_path / "broken.jsonl", format="aipo")
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(
        "".join(json.dumps({**r, "judge": f"j{i}"}) + "\n" for i, r in enumerate(records)), encoding="utf-8"
    )
    with pytest.raises(ValueError, match="disagree on 'judge'"):
        winrate_from_annotations_file(mixed, format="aipo")
