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
