"""Win rate / LC win rate: the published AlpacaEval 2.0 numbers and edge cases."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from aipo_core.winrate import (
    PRIOR_LENGTH_SLOPE,
    normalize_preferences,
    win_rates,
    winrate_from_annotations_file,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
ALPACA_DIR = REPO_ROOT.parent / "shared" / "data" / "benchmarks" / "alpaca_eval"
MODELS = ["gpt-3.5-turbo-1106", "gpt-3.5-turbo-1106_concise", "gpt-3.5-turbo-1106_verbose"]


def _published() -> dict[str, dict[str, str]]:
    with (ALPACA_DIR / "leaderboard_subset.csv").open(encoding="utf-8") as fh:
        return {row["model"]: row for row in csv.DictReader(fh)}


@pytest.mark.parametrize("model", MODELS)
def test_matches_published_alpaca_eval_numbers(model: str) -> None:
    published = _published()[model]
    got = winrate_from_annotations_file(ALPACA_DIR / "annotations" / f"{model}.json", format="alpaca_eval")

    assert got["win_rate"] == pytest.approx(float(published["win_rate"]), abs=0.01)
    assert got["win_rate_se"] == pytest.approx(float(published["standard_error"]), abs=0.01)
    assert got["discrete_win_rate"] == pytest.approx(float(published["discrete_win_rate"]), abs=0.01)
    assert (got["n_wins"], got["n_wins_base"], got["n_draws"], got["n"]) == (
        int(published["n_wins"]),
        int(published["n_wins_base"]),
        int(published["n_draws"]),
        int(published["n_total"]),
    )
    assert int(got["avg_length"]) == int(published["avg_length"])
    assert abs(got["lc_win_rate"] - float(published["length_controlled_winrate"])) < 5.0
    assert 0 < got["lc_win_rate_se"] < 5


def test_baseline_against_itself_is_exactly_fifty() -> None:
    """The published gpt4_1106_preview row: every judgement a tie, identical outputs -> 50 / 50."""
    lengths = [100, 2000, 350, 4000, 900]
    report = win_rates([1.5] * 5, lengths, lengths)
    assert report.win_rate == 50.0
    assert report.lc_win_rate == pytest.approx(50.0, abs=1e-6)
    assert report.discrete_win_rate == 50.0
    assert report.n_draws == 5


def test_all_wins_and_all_losses_stay_finite_and_extreme() -> None:
    rng = np.random.default_rng(0)
    out_len = rng.integers(100, 3000, size=200)
    base_len = rng.integers(100, 3000, size=200)
    wins = win_rates([2.0] * 200, out_len, base_len)
    losses = win_rates([1.0] * 200, out_len, base_len)
    assert wins.win_rate == 100.0 and losses.win_rate == 0.0
    assert wins.win_rate_se == 0.0
    assert 90.0 < wins.lc_win_rate <= 100.0
    assert 0.0 <= losses.lc_win_rate < 10.0


def test_longer_outputs_that_win_are_discounted() -> None:
    """A model that wins only where it is much longer gets LC below its raw win rate."""
    rng = np.random.default_rng(1)
    base_len = rng.integers(500, 1500, size=400).astype(float)
    longer = np.arange(400) % 2 == 0
    out_len = np.where(longer, base_len + 1500, base_len - 300)
    prefs = np.where(longer, 1.9, 1.1)
    report = win_rates(prefs, out_len, base_len)
    assert report.win_rate == pytest.approx(50.0)
    assert report.lc_win_rate < report.win_rate - 10
    assert report.length_slope > PRIOR_LENGTH_SLOPE


def test_ties_count_half_and_legacy_zero_is_a_tie() -> None:
    report = win_rates([2.0, 1.0, 1.5, 0], [10, 10, 10, 10], [10, 10, 10, 10])
    assert report.win_rate == pytest.approx(50.0)
    assert (report.n_wins, report.n_wins_base, report.n_draws) == (1, 1, 2)


def test_tiny_inputs() -> None:
    single = win_rates([2.0], [120], [80])
    assert single.n == 1 and single.win_rate == 100.0
    assert math.isnan(single.win_rate_se)
    assert single.to_dict()["win_rate_se"] is None  # JSON has no NaN
    assert 50.0 < single.lc_win_rate < 100.0
    pair = win_rates(["1.0", "2.0"], [50, 500], [200, 200])
    assert pair.win_rate == 50.0 and 0.0 < pair.lc_win_rate < 100.0


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


def test_aipo_eval_jsonl_format(tmp_path: Path) -> None:
    records = [
        {"id": "a", "preference": 2.0, "output_chars": 300, "baseline_chars": 200},
        {"id": "b", "preference": 1.25, "output_chars": 100, "baseline_chars": 200},
    ]
    path = tmp_path / "alpaca_eval.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    got = winrate_from_annotations_file(path, format="aipo")
    assert got["win_rate"] == pytest.approx(62.5)
    assert got["avg_length"] == 200.0
    with pytest.raises(ValueError, match="format"):
        winrate_from_annotations_file(path, format="csv")
    (tmp_path / "broken.jsonl").write_text(json.dumps({"preference": 2.0}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="output_chars"):
        winrate_from_annotations_file(tmp_path / "broken.jsonl", format="aipo")
