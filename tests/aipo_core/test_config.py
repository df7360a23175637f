"""RunConfig bounds: no field can ask for unbounded work; errors name the field."""

import pytest
from pydantic import ValidationError

from aipo_core.config import MAX_SEED, RunConfig


def errors(**overrides) -> dict[str, str]:
    """field path → message of every validation error for a config with `overrides`."""
    with pytest.raises(ValidationError) as failed:
        RunConfig.model_validate({"name": "x", "model": "tiny-random-llama", **overrides})
    return {".".join(str(p) for p in e["loc"]): e["msg"] for e in failed.value.errors()}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"iterations": 1000}, "iterations"),
        ({"seed": 2**80}, "seed"),
        ({"seed": -1}, "seed"),
        ({"evaluation": {"benchmarks": ["alpaca_eval"] * 20_000}}, "evaluation.benchmarks"),
        ({"evaluation": {"benchmarks": ["alpaca_eval", "mt_bench", "alpaca_eval"]}}, "evaluation.benchmarks"),
        ({"evaluation": {"limit": 10**9}}, "evaluation.limit"),
        ({"self_instruct": {"num_instructions": 100_000}}, "self_instruct.num_instructions"),
        ({"self_instruct": {"max_attempts_factor": 100}}, "self_instruct.max_attempts_factor"),
        ({"self_instruct": {"num_instructions": 20_000, "max_attempts_factor": 10}}, "self_instruct"),
        ({"generation": {"num_candidates": 1000}}, "generation.num_candidates"),
        ({"generation": {"batch_size": 10**6}}, "generation.batch_size"),
        ({"training": {"max_steps": 10**9}}, "training.max_steps"),
        ({"training": {"epochs": 1e6}}, "training.epochs"),
        ({"training": {"max_length": 10**7}}, "training.max_length"),
        ({"training": {"keep_policies": 0}}, "training.keep_policies"),
        ({"training": {"keep_policies": "some"}}, "training.keep_policies"),
        ({"objective": {"name": "aipo", "beta": float("inf")}}, "objective.beta"),
        ({"generation": {"temperature": float("nan")}}, "generation.temperature"),
        ({"model": "m" * 5000}, "model"),
        ({"prompt_pool": "p" * 5000}, "prompt_pool"),
        ({"ranker": {"kind": "length_biased", "length_bias": {"bonus": 1.5}}}, "ranker.length_bias.bonus"),
        ({"ranker": {"kind": "length_biased", "length_bias": {"bonus": -0.1}}}, "ranker.length_bias.bonus"),
        (
            {"ranker": {"kind": "length_biased", "length_bias": {"bonus": 0.1, "unit": "word"}}},
            "ranker.length_bias.unit",
        ),
        (
            {"ranker": {"kind": "length_biased", "length_bias": {"bonus": 0.1, "judge": "length_biased"}}},
            "ranker.length_bias.judge",
        ),
    ],
)
def test_out_of_bounds_values_are_refused_with_their_field(overrides, field):
    assert field in errors(**overrides)


def test_the_issue_examples_together_name_each_field():
    found = errors(
        iterations=1000,
        seed=2**80,
        evaluation={"benchmarks": ["alpaca_eval"] * 20_000},
        self_instruct={"num_instructions": 100_000, "max_attempts_factor": 100},
    )
    assert set(found) == {
        "iterations",
        "seed",
        "evaluation.benchmarks",
        "self_instruct.num_instructions",
        "self_instruct.max_attempts_factor",
    }


def test_duplicate_benchmarks_are_an_error_naming_the_repeat():
    assert (
        "repeated: alpaca_eval"
        in errors(evaluation={"benchmarks": ["alpaca_eval", "alpaca_eval"]})["evaluation.benchmarks"]
    )


def test_largest_seed_still_fits_numpy_after_adding_the_iteration():
    import numpy as np

    config = RunConfig.model_validate({"name": "x", "model": "m", "seed": MAX_SEED, "iterations": 100})
    np.random.default_rng(config.seed + config.iterations)  # numpy seeds must be < 2**32 here
    assert config.seed + config.iterations < 2**32


def test_keep_policies_accepts_last_all_and_a_count():
    for value in ("last", "all", 3):
        config = RunConfig.model_validate({"name": "x", "model": "m", "training": {"keep_policies": value}})
        assert config.training.keep_policies == value
    assert RunConfig.model_validate({"name": "x", "model": "m"}).training.keep_best_policy is True


def test_a_length_biased_ranker_needs_its_bias_and_only_it_has_one():
    assert "length_bias" in next(iter(errors(ranker={"kind": "length_biased"}).values()))
    assert "length_biased" in next(
        iter(errors(ranker={"kind": "llm_judge", "length_bias": {"bonus": 0.1}}).values())
    )
    ranker = RunConfig.model_validate(
        {
            "name": "x",
            "model": "m",
            "ranker": {"kind": "length_biased", "length_bias": {"judge": "pairrm", "bonus": 0.1}},
        }
    ).ranker
    assert (ranker.kind, ranker.judge_kind, ranker.length_bias.unit) == (
        "length_biased",
        "pairrm",
        "100_chars",
    )
