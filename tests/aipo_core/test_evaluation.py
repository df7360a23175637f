"""evaluate_policy on the tiny random Llama; the judge (fixed base model or the policy itself);
the fixed, seeded, stratified evaluation sample."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter

import pytest

from aipo_core.config import EvaluationConfig, JudgeConfig, RunConfig
from aipo_core.data.benchmarks import load_benchmark
from aipo_core.eval_sample import evaluation_sample, stratified_sample
from aipo_core.eval_summary import SELF_JUDGED_LABEL, judge_info
from aipo_core.evaluation import (
    AlpacaEvalJudge,
    eval_metrics,
    evaluate_policy,
    judge_against_baseline,
    make_judge,
)
from aipo_core.models import load_model_and_tokenizer
from aipo_core.ranking import LLMJudgeRanker
from aipo_core.winrate import raw_win_rate

RECORD_KEYS = {
    "id",
    "category",
    "judge",
    "baseline_model",
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
    config = _config(judge={"kind": "llm_judge", "model": "policy"})
    judge = make_judge(config.judge, policy=tiny)
    assert isinstance(judge, LLMJudgeRanker)
    events: list[dict] = []

    result = evaluate_policy(
        model,
        tokenizer,
        "alpaca_eval",
        config,
        judge=judge,
        judge_name="llm_judge:policy θ_1",
        baseline_model="gpt4_1106_preview",
        sink=events.append,
    )

    items = evaluation_sample("alpaca_eval", 3, 0).items
    assert result.prompt_ids == [item.id for item in items]
    for record, item in zip(result.records, items, strict=True):
        assert set(record) == RECORD_KEYS
        assert record["instruction"] == item.instruction and record["category"] == item.category
        assert record["baseline_output"] == item.baseline_output
        assert record["output_chars"] == len(record["output"])
        assert record["baseline_chars"] == len(item.baseline_output)
        assert 0 <= record["output_tokens"] <= 12
        assert 1.0 <= record["preference"] <= 2.0
        assert (record["judge"], record["baseline_model"]) == ("llm_judge:policy θ_1", "gpt4_1106_preview")
    json.dumps(result.records)

    m = result.metrics
    assert m["n"] == 3 and "lc_win_rate" not in m  # LC is a run-level number (eval_summary)
    assert 0.0 <= m["win_rate"] <= 100.0
    assert m["win_rate"] == pytest.approx(100.0 * sum(r["preference"] - 1 for r in result.records) / 3)
    assert m["avg_length"] == pytest.approx(sum(r["output_chars"] for r in result.records) / 3)
    assert m["avg_tokens"] == pytest.approx(sum(r["output_tokens"] for r in result.records) / 3)
    assert m["win_rate_se"] >= 0.0
    assert [e["fraction"] for e in events if e["kind"] == "progress"][-1] == 1.0
    assert events[-1]["values"]["eval/alpaca_eval/win_rate"] == m["win_rate"]


def test_base_judge_is_the_frozen_initial_model(tiny, tmp_path) -> None:
    """Default judge: model: base; make_judge judges with the base model, not the evaluated one."""
    config = EvaluationConfig()
    assert (config.judge.kind, config.judge.model, config.seed) == ("llm_judge", "base", 0)
    base = load_model_and_tokenizer("tiny-random-llama", cache_dir=tmp_path)
    judge = make_judge(config.judge, policy=tiny, base=base)
    assert judge.model is base[0] and judge.model is not tiny[0]
    with pytest.raises(ValueError, match="base model"):
        make_judge(config.judge, policy=tiny)
    self_judge = make_judge(JudgeConfig(model="policy"), policy=tiny, base=base)
    assert self_judge.model is tiny[0]


def test_judge_identity_and_labels() -> None:
    def info(**judge):
        config = {"name": "x", "model": "m0", "evaluation": {"judge": judge}}
        return judge_info(RunConfig.model_validate(config))

    base = info()
    assert (base.name(0), base.name(3), base.self_judged) == ("llm_judge:m0", "llm_judge:m0", False)
    assert base.label == "base model θ_0 (m0), fixed"
    own = info(model="policy")
    assert own.self_judged and own.label == SELF_JUDGED_LABEL == "self-judged (changes every iteration)"
    assert own.name(0) != own.name(1)  # a different judge for every θ_j: never pooled
    assert info(kind="pairrm").name(2) == "pairrm:llm-blender/PairRM"
    assert info(kind="alpaca_eval").name(1) == "alpaca_eval:weighted_alpaca_eval_gpt4_turbo"
    with pytest.raises(ValueError, match="reward_model"):
        JudgeConfig(kind="reward_model")


def test_evaluation_sample_is_stratified_seeded_and_fixed() -> None:
    """Not the first N rows (all helpful_base): a seeded sample with the benchmark's mix."""
    items = load_benchmark("alpaca_eval")
    assert {item.category for item in items[:32]} == {"helpful_base"}
    sample = evaluation_sample("alpaca_eval", 32, seed=0)
    population = Counter(item.category for item in items)
    assert sum(sample.strata.values()) == 32 and set(sample.strata) == set(population)
    for category, count in sample.strata.items():  # proportional, up to rounding
        assert abs(count - 32 * population[category] / len(items)) < 1
    # The same prompts for every call (every iteration, every run) with the same evaluation seed …
    assert evaluation_sample("alpaca_eval", 32, seed=0).prompt_ids == sample.prompt_ids
    # … other prompts with another seed; and the sample is in benchmark order.
    assert evaluation_sample("alpaca_eval", 32, seed=1).prompt_ids != sample.prompt_ids
    positions = [int(i) for i in sample.prompt_ids]
    assert positions == sorted(positions)
    described = sample.describe()
    assert described["stratified_by"] == "dataset" and described["prompt_ids"] == sample.prompt_ids
    assert evaluation_sample("alpaca_eval", None, seed=0).prompt_ids == [item.id for item in items]


def test_evaluation_sample_of_mt_bench_and_arena_hard() -> None:
    mt = evaluation_sample("mt_bench", 12, seed=0)
    assert mt.strata == {"coding": 4, "math": 4, "reasoning": 4}  # the 30 questions with a reference
    assert all(item.baseline_output for item in mt.items) and mt.n_available == 30
    assert mt.notes == [
        "mt_bench: 50 of 80 prompts have no baseline/reference output and are never evaluated"
    ]
    arena = evaluation_sample("arena_hard", 40, seed=0)
    assert len(arena.items) == 40 and all(n == 1 for n in arena.strata.values())  # 40 distinct clusters


def test_stratified_sample_validates_limit() -> None:
    items = load_benchmark("alpaca_eval")[:10]
    assert stratified_sample(items, 10, 0) == items
    with pytest.raises(ValueError, match="limit"):
        stratified_sample(items, 0, 0)


def test_evaluation_seed_is_a_config_key_independent_of_the_run_seed() -> None:
    a = RunConfig.model_validate({"name": "a", "model": "m", "seed": 1})
    b = RunConfig.model_validate({"name": "b", "model": "m", "seed": 2})
    assert a.evaluation.seed == b.evaluation.seed == 0
    with pytest.raises(ValueError, match="seed"):
        EvaluationConfig(seed=-1)


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
    expected = raw_win_rate([2.0, 1.0], [300, 100])
    assert (m["n"], m["n_unjudged"]) == (2, 1)
    assert m["win_rate"] == 50.0 == expected["win_rate"] and m["win_rate_se"] == expected["win_rate_se"]
    assert m["avg_tokens"] == 30.0 and m["avg_length"] == 200.0
    assert eval_metrics([]) == {"n_unjudged": 0, "n": 0}


@pytest.mark.skipif(importlib.util.find_spec("alpaca_eval") is not None, reason="alpaca_eval is installed")
def test_alpaca_eval_judge_without_the_package_says_how_to_install() -> None:
    with pytest.raises(ImportError, match="pip install alpaca-eval"):
        make_judge(JudgeConfig(kind="alpaca_eval", annotator="weighted_alpaca_eval_gpt4_turbo"))
    with pytest.raises(ImportError, match="setuptools<81"):
        AlpacaEvalJudge()
