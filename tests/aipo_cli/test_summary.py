"""The per-iteration summary table of `aipo run --local` and `aipo demo` (from the API's body)."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from aipo_cli.demo import iterations_table
from aipo_cli.summary import summary_rows, summary_table


def _evaluation(evaluated: str, iteration: int | None, j: int, **metrics: Any) -> dict[str, Any]:
    return {
        "benchmark": "alpaca_eval",
        "evaluated": evaluated,
        "iteration": iteration,
        "policy_index": j,
        "judge": f"llm_judge:policy θ_{j}",
        "judge_label": "self-judged (changes every iteration)",
        "self_judged": True,
        "win_rate": 40.0 + j,
        "win_rate_se": 8.5,
        "lc_win_rate": None,
        "lc_win_rate_se": None,
        "lc_unavailable_reason": "too few judgements to estimate this judge's length slope (12 < 50)",
        "slope_source": "estimated",
        "avg_length": 400.0 + j,
        **metrics,
    }


def _render(table) -> list[str]:
    out = io.StringIO()
    Console(file=out, width=200).print(table)
    return out.getvalue().splitlines()


def test_demo_table_starts_at_the_base_model_and_labels_the_self_judge() -> None:
    body = {
        "base_evaluations": {"alpaca_eval": _evaluation("base", None, 0)},
        "items": [
            {"index": 0, "pair_stats": {"pairs": 8, "agreement_rate": 0.625}, "evaluations": {
                "alpaca_eval": _evaluation("policy", 0, 1)}},
            {"index": 1, "pair_stats": None, "evaluations": {}},
        ],
    }  # fmt: skip
    lines = _render(iterations_table(body))
    rows = [line.split("│")[1:-1] for line in lines if line.startswith("│")]
    assert [[cell.strip() for cell in row] for row in rows] == [
        ["θ_0 (base)", "–", "–", "–", "40.0 ± 8.5", "n/a", "400"],
        ["θ_1", "0", "8", "0.62", "41.0 ± 8.5", "n/a", "401"],
    ]
    text = "\n".join(lines)
    assert "judge: self-judged (changes every iteration)" in text
    assert "LC n/a for θ_0 (base), θ_1: too few judgements" in text


def test_lc_is_shown_with_its_se_and_how_the_slope_was_obtained() -> None:
    estimated = {
        "lc_win_rate": 35.25,
        "lc_win_rate_se": 4.5,
        "lc_unavailable_reason": None,
        "length_slope": 1.234,
        "length_slope_se": 0.4,
        "lc_pooled_n": 96,
        "judge": "llm_judge:m",
        "judge_label": "base model θ_0 (m), fixed",
    }
    rows = summary_rows([_evaluation("base", None, 0, **estimated)], {}, "alpaca_eval")
    text = "\n".join(_render(summary_table(rows, "alpaca_eval")))
    assert "35.2 ± 4.5" in text and "judge: base model θ_0 (m), fixed" in text
    assert "length slope 1.23 ± 0.40 estimated from 96 judgements" in text
    prior = {**estimated, "slope_source": "prior", "judge": "alpaca_eval:weighted_alpaca_eval_gpt4_turbo"}
    rows = summary_rows([_evaluation("base", None, 0, **prior)], {}, "alpaca_eval")
    assert "published length slope" in "\n".join(_render(summary_table(rows, "alpaca_eval")))
    assert summary_rows([_evaluation("base", None, 0)], {}, "mt_bench") == []
