"""evaluate_policy on the tiny random Llama, judged by itself (llm_judge with model: policy)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from aipo_core.config import EvaluationConfig, JudgeConfig
from aipo_core.data.benchmarks import load_benchmark
from aipo_core.evaluation import (
    AlpacaEvalJudge,
    eval_metrics,
    evaluate_policy,
    judge_against_baseline,
    make_judge,
)
from aipo_core.models import load_model_and_tokenizer
from aipo_core.ranking import LLMJudgeRanker
from aipo_core.winrate import win_rates

RECORD_KEYS = {
    "id",
    "instruction",
    "output",
    "baseline_output",
    "preference",
    "output_chars",
    "baseline_chars",
    "output_tokens",
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_model_and_tokenizer("tiny-random-llama", cache_dir=tmp_path_factory.mktemp("models"))


def _config(**overrides) -> EvaluationConfig:
    base = {"benchmarks": ["alpaca_eval"], "limit": 3, "max_new_tokens": 12, "judge": {"kind": "llm_judge"}}
    return EvaluationConfig.model_validate({**base, **overrides})


def test_alpaca_eval_with_the_policy_as_judge(tiny) -> None:
    model, tokenizer = tiny
    config = _config()
    judge = make_judge(config.judge, policy=tiny)
    assert isinstance(judge, LLMJudgeRanker)
    events: list[dict] = []

    result = evaluate_policy(model, tokenizer, "alpaca_eval", config, judge=judge, seed=0, sink=events.append)

    items = load_benchmark("alpaca_eval", 3)
    assert [r["id"] for r in result.records] == [item.id for item in items]
    for record, item in zip(result.records, items, strict=True):
        assert set(record) == RECORD_KEYS
        assert record["instruction"] == item.instruction
        assert record["baseline_output"] == item.baseline_output
        assert record["output_chars"] == len(record["output"])
        assert record["baseline_chars"] == len(item.baseline_output)
        assert 0 <= record["output_tokens"] <= 12
        assert 1.0 <= record["preference"] <= 2.0
    json.dumps(result.records)

    m = result.metrics
    assert m["n"] == 3 and m["n_skipped"] == 0
    assert 0.0 <= m["win_rate"] <= 100.0 and 0.0 <= m["lc_win_rate"] <= 100.0
    assert m["win_rate"] == pytest.approx(100.0 * sum(r["preference"] - 1 for r in result.records) / 3)
    assert m["avg_length"] == pytest.approx(sum(r["output_chars"] for r in result.records) / 3)
    assert m["avg_tokens"] == pytest.approx(sum(r["output_tokens"] for r in result.records) / 3)
    assert m["win_rate_se"] >= 0.0
    assert [e["fraction"] for e in events if e["kind"] == "progress"][-1] == 1.0
    assert events[-1]["values"]["eval/alpaca_eval/win_rate"] == m["win_rate"]


def test_mt_bench_skips_items_without_reference(tiny) -> None:
    model, tokenizer = tiny
    items = load_benchmark("mt_bench", 22)  # writing and roleplay, then two reasoning questions
    with_reference = [item for item in items if item.baseline_output]
    judge = make_judge(JudgeConfig(kind="llm_judge"), policy=tiny)

    result = evaluate_policy(
        model, tokenizer, "mt_bench", _config(limit=22, max_new_tokens=4), judge=judge, seed=0
    )

    assert [item.id for item in with_reference] == ["101", "102"]
    assert [r["id"] for r in result.records] == ["101", "102"]
    assert result.metrics["n"] == 2 and result.metrics["n_skipped"] == 20
    assert result.notes == ["mt_bench: 20 of 22 items have no baseline/reference output and were not judged"]


class _ConstantJudge:
    """A judge that always gives the same P(output better): makes the preference mapping checkable."""

    def __init__(self, p: float) -> None:
        self.p = p

    def pairwise_preference(self, prompt: str, output_a: str, output_b: str) -> float:
        return self.p


def test_preference_mapping_and_validation() -> None:
    assert judge_against_baseline(_ConstantJudge(0.75), ["q"] * 3, ["a"] * 3, ["b"] * 3) == [1.75] * 3
    assert judge_against_baseline(_ConstantJudge(float("nan")), ["q"], ["a"], ["b"]) == [None]
    with pytest.raises(ValueError, match="expected \\[0, 1\\]"):
        judge_against_baseline(_ConstantJudge(1.5), ["q"], ["a"], ["b"])


def test_eval_metrics_match_winrate_and_drop_unjudged() -> None:
    records = [
        {"preference": 2.0, "output_chars": 300, "baseline_chars": 200, "output_tokens": 60},
        {"preference": 1.0, "output_chars": 100, "baseline_chars": 400, "output_tokens": 20},
        {"preference": None, "output_chars": 50, "baseline_chars": 50, "output_tokens": 10},
    ]
    m = eval_metrics(records)
    expected = win_rates([2.0, 1.0], [300, 100], [200, 400])
    assert (m["n"], m["n_unjudged"]) == (2, 1)
    assert m["win_rate"] == 50.0 and m["lc_win_rate"] == expected.lc_win_rate
    assert m["avg_tokens"] == 30.0
    assert eval_metrics([]) == {"n_skipped": 0, "n_unjudged": 0, "n": 0}


@pytest.mark.skipif(importlib.util.find_spec("alpaca_eval") is not None, reason="alpaca_eval is installed")
def test_alpaca_eval_judge_without_the_package_says_how_to_install() -> None:
    with pytest.raises(ImportError, match="pip install alpaca-eval"):
        make_judge(JudgeConfig(kind="alpaca_eval", annotator="weighted_alpaca_eval_gpt4_turbo"))
    with pytest.raises(ImportError, match="setuptools<81"):
        AlpacaEvalJudge()
