"""Metric ingest idempotency and SQL downsampling, on SQLite and PostgreSQL."""

from __future__ import annotations

import math

import numpy as np

from backend.store import metrics, runs
from tests.backend.conftest import small_config


def points(key: str, steps: range, *, iteration: int = 0, stage: str = "train") -> list[dict]:
    return [
        {"iteration": iteration, "stage": stage, "key": key, "step": s, "value": math.sin(s)} for s in steps
    ]


def test_ingest_is_idempotent_and_first_write_wins(session) -> None:
    run = runs.create_run(session, small_config())
    assert metrics.ingest_metrics(session, run.id, points("loss", range(1500))) == 1500
    assert metrics.ingest_metrics(session, run.id, points("loss", range(1000, 2500))) == 1000
    changed = [{"key": "loss", "stage": "train", "step": 0, "value": 123.0}]
    assert metrics.ingest_metrics(session, run.id, changed) == 0
    session.commit()
    total, history = metrics.metric_history(session, run.id, "loss", points=5000)
    assert total == 2500 and len(history) == 2500
    assert history[0]["value"] == 0.0 and [p["step"] for p in history] == list(range(2500))


def test_same_step_in_different_iterations_or_stages_are_distinct(session) -> None:
    run = runs.create_run(session, small_config())
    batch = (
        points("x", range(10)) + points("x", range(10), iteration=1) + points("x", range(10), stage="eval")
    )
    assert metrics.ingest_metrics(session, run.id, batch) == 30
    assert metrics.metric_history(session, run.id, "x", iteration=1)[0] == 10
    assert metrics.metric_history(session, run.id, "x", stage="eval")[0] == 10


def test_non_finite_values_are_stored_as_null(session) -> None:
    run = runs.create_run(session, small_config())
    metrics.ingest_metrics(
        session,
        run.id,
        [{"key": "loss", "step": 0, "value": float("nan")}, {"key": "loss", "step": 1, "value": 1}],
    )
    _, history = metrics.metric_history(session, run.id, "loss")
    assert [p["value"] for p in history] == [None, 1.0]


def test_downsampled_history_equals_bucket_means(session) -> None:
    run = runs.create_run(session, small_config())
    n, buckets = 10_007, 100
    batch = points("loss", range(5000), iteration=0) + points("loss", range(5007), iteration=1)
    metrics.ingest_metrics(session, run.id, batch)
    session.commit()
    total, history = metrics.metric_history(session, run.id, "loss", points=buckets)
    values = np.array([p["value"] for p in batch])  # already in (iteration, step) order
    iterations = np.array([p["iteration"] for p in batch])
    bucket = np.arange(n) * buckets // n
    groups = sorted({(int(i), int(b)) for i, b in zip(iterations, bucket, strict=True)})
    expected = [values[(iterations == i) & (bucket == b)].mean() for i, b in groups]
    assert total == n and len(history) == len(groups) == buckets + 1  # one bucket split at the boundary
    np.testing.assert_allclose([p["value"] for p in history], expected, rtol=1e-9, atol=1e-12)
    assert sum(p["count"] for p in history) == n
    assert all(p["min"] <= p["value"] <= p["max"] for p in history)
    first_of_iteration_1 = next(p for p in history if p["iteration"] == 1)
    assert first_of_iteration_1["step"] == 0  # each iteration's curve starts at its own first step


def test_histories_of_several_keys_in_one_query(session) -> None:
    run = runs.create_run(session, small_config())
    metrics.ingest_metrics(session, run.id, points("a", range(300)) + points("b", range(50)))
    found = metrics.metric_histories(session, run.id, None, points=100)
    assert {k: (total, len(h)) for k, (total, h) in found.items()} == {"a": (300, 100), "b": (50, 50)}
    assert metrics.metric_history(session, run.id, "missing") == (0, [])


def test_keys_and_eval_metrics_by_iteration(session) -> None:
    run = runs.create_run(session, small_config())
    metrics.ingest_metrics(
        session,
        run.id,
        [
            {"iteration": 0, "stage": "evaluate", "key": "alpaca_eval/win_rate", "step": 0, "value": 10.0},
            {"iteration": 1, "stage": "evaluate", "key": "alpaca_eval/win_rate", "step": 0, "value": 12.0},
            {"iteration": 1, "stage": "evaluate", "key": "alpaca_eval/win_rate", "step": 1, "value": 13.0},
            {"iteration": 1, "stage": "train", "key": "loss", "step": 0, "value": 0.7},
        ],
    )
    assert metrics.metric_keys(session, run.id) == [("alpaca_eval/win_rate", 3), ("loss", 1)]
    assert metrics.eval_metrics_by_iteration(session, run.id) == {
        0: {"alpaca_eval/win_rate": 10.0},
        1: {"alpaca_eval/win_rate": 13.0},
    }
