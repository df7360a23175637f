"""Eval samples: idempotent replace per (run, iteration, benchmark) and keyset pages."""

from __future__ import annotations

import pytest

from backend.store import eval_samples, runs
from tests.backend.conftest import small_config


def sample(i: int) -> dict:
    return {
        "id": str(i),
        "instruction": f"q{i}",
        "output": f"a{i}",
        "baseline_output": "b",
        "preference": 1.0 + (i % 3) / 2,
        "output_chars": 2,
        "baseline_chars": 1,
        "output_tokens": 1,
    }


def test_replace_and_paginate(session) -> None:
    run = runs.create_run(session, small_config())
    eval_samples.replace_eval_samples(session, run.id, 0, "alpaca_eval", [sample(i) for i in range(12)])
    eval_samples.replace_eval_samples(session, run.id, 0, "mt_bench", [sample(i) for i in range(3)])
    eval_samples.replace_eval_samples(session, run.id, 0, "alpaca_eval", [sample(i) for i in range(10)])
    session.commit()
    seen, cursor = [], None
    while True:
        page, cursor, total = eval_samples.query_eval_samples(session, run.id, limit=4, cursor=cursor)
        seen += [(s.benchmark, s.idx) for s in page]
        if cursor is None:
            break
    assert total == 13 and len(set(seen)) == 13 and seen == sorted(seen)
    only_mt, _, n = eval_samples.query_eval_samples(session, run.id, benchmark="mt_bench")
    assert n == 3 and only_mt[0].preference == 1.0


def test_missing_output_is_rejected(session) -> None:
    run = runs.create_run(session, small_config())
    with pytest.raises(ValueError, match=r"alpaca_eval\[0\]\.output"):
        eval_samples.replace_eval_samples(session, run.id, 0, "alpaca_eval", [{"instruction": "q"}])


def test_base_and_policy_samples_of_one_iteration_are_kept_apart(session) -> None:
    """Iteration 0 stores θ_0's answers (evaluated="base") next to θ_1's; replacing one keeps the other."""
    run = runs.create_run(session, small_config())
    eval_samples.replace_eval_samples(session, run.id, 0, "alpaca_eval", [sample(i) for i in range(4)])
    for _ in range(2):  # a retried stage replaces, never duplicates
        eval_samples.replace_eval_samples(
            session, run.id, 0, "alpaca_eval", [sample(i) for i in range(3)], evaluated="base"
        )
    session.commit()
    _, _, total = eval_samples.query_eval_samples(session, run.id)
    base, _, n_base = eval_samples.query_eval_samples(session, run.id, evaluated="base")
    assert total == 7 and n_base == 3 and {s.evaluated for s in base} == {"base"}
    evaluations = {(e.evaluated, e.iteration): e for e in eval_samples.run_evaluations(session, run.id)}
    assert set(evaluations) == {("base", 0), ("policy", 0)}
    assert evaluations["base", 0].prompt_ids == ["0", "1", "2"]
    assert evaluations["policy", 0].policy_index == 1 and evaluations["base", 0].policy_index == 0


def test_model_output_with_nul_characters_is_stored(session) -> None:
    run = runs.create_run(session, small_config())
    record = {**sample(0), "output": "an\x00swer"}
    assert eval_samples.replace_eval_samples(session, run.id, 0, "alpaca_eval", [record]) == 1
    session.commit()
    (row,), _, _ = eval_samples.query_eval_samples(session, run.id)
    assert row.output == "an\ufffdswer"


def test_evaluations_of_many_runs_are_read_together(session) -> None:
    first, second, unevaluated = (runs.create_run(session, small_config()) for _ in range(3))
    eval_samples.replace_eval_samples(session, first.id, 0, "alpaca_eval", [sample(i) for i in range(4)])
    eval_samples.replace_eval_samples(
        session, first.id, 0, "alpaca_eval", [sample(i) for i in range(4)], evaluated="base"
    )
    eval_samples.replace_eval_samples(session, second.id, 1, "alpaca_eval", [sample(i) for i in range(2)])
    session.flush()
    read = eval_samples.runs_evaluations(session, [first.id, second.id, unevaluated.id])
    assert set(read) == {first.id, second.id}
    assert sorted((e.evaluated, e.iteration) for e in read[first.id]) == [("base", 0), ("policy", 0)]
    assert read[second.id][0].prompt_ids == ["0", "1"]
    assert read[first.id] == eval_samples.run_evaluations(session, first.id)


def test_fingerprint_changes_when_judgements_are_replaced(session) -> None:
    """Even when the replacement reuses the ids and keeps every column's sum: swapping which
    answer won changes the length-controlled rate, so it must change the fingerprint."""
    run = runs.create_run(session, small_config())
    records = [{**sample(i), "preference": 2.0 if i == 0 else 1.0, "output_chars": 10 + i} for i in range(2)]
    eval_samples.replace_eval_samples(session, run.id, 0, "alpaca_eval", records)
    session.flush()
    before = eval_samples.evaluation_fingerprints(session, [run.id])
    swapped = [{**r, "preference": 3.0 - r["preference"]} for r in records]
    eval_samples.replace_eval_samples(session, run.id, 0, "alpaca_eval", swapped)
    session.flush()
    after = eval_samples.evaluation_fingerprints(session, [run.id])
    assert set(before) == {run.id} and before != after
    eval_samples.replace_eval_samples(session, run.id, 0, "alpaca_eval", swapped)
    session.flush()
    assert eval_samples.evaluation_fingerprints(session, [run.id])[run.id][4:] == after[run.id][4:]
