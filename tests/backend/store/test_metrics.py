"""Metric ingest idempotency and SQL downsampling, on SQLite and PostgreSQL."""

from __future__ import annotations

import math

import numpy as np
import pytest

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


def small_series() -> list[dict]:
    """13 rows, hand-checked below: iteration 0 logs steps 0-7 (train; step 3 non-finite) and step 4
    again under "eval"; iteration 1 logs steps 10-13."""
    rows = [{"iteration": 0, "stage": "train", "key": "loss", "step": s, "value": float(s)} for s in range(8)]
    rows[3]["value"] = float("nan")
    rows.append({"iteration": 0, "stage": "eval", "key": "loss", "step": 4, "value": 40.0})
    rows += [
        {"iteration": 1, "stage": "train", "key": "loss", "step": s, "value": 100.0 + s}
        for s in range(10, 14)
    ]
    return rows


def entry(iteration: int, stage: str, step: int, value, lo, hi, count: int, attempt: int = 0) -> dict:
    return {"iteration": iteration, "stage": stage, "attempt": attempt, "step": step, "value": value,
            "min": lo, "max": hi, "count": count}  # fmt: skip


def test_downsampled_history_matches_hand_computed_buckets(session) -> None:
    run = runs.create_run(session, small_config())
    metrics.ingest_metrics(session, run.id, small_series())
    session.commit()
    total, history = metrics.metric_history(session, run.id, "loss", points=6)
    # 13 rows > 6 points: iteration 0 (9 rows) gets 4 buckets, iteration 1 (4 rows) 2: shares
    # 6·9/13 = 4.15 and 6·4/13 = 1.85, the leftover bucket to the larger remainder. Iteration 0's
    # steps 0-7 split into 4 ranges of 2 steps, iteration 1's steps 10-13 into 2; both rows of step
    # 4 (train and eval) share a bucket, whose stage is the smallest; NULL counts but is not averaged.
    assert total == 13
    assert history == [
        entry(0, "train", 0, 0.5, 0.0, 1.0, 2),
        entry(0, "train", 2, 2.0, 2.0, 2.0, 2),
        entry(0, "eval", 4, pytest.approx(49 / 3), 4.0, 40.0, 3),
        entry(0, "train", 6, 6.5, 6.0, 7.0, 2),
        entry(1, "train", 10, 110.5, 110.0, 111.0, 2),
        entry(1, "train", 12, 112.5, 112.0, 113.0, 2),
    ]


def test_series_of_at_most_points_rows_comes_back_as_is(session) -> None:
    run = runs.create_run(session, small_config())
    metrics.ingest_metrics(session, run.id, small_series())
    total, history = metrics.metric_history(session, run.id, "loss", points=13)
    raw = sorted(small_series(), key=lambda r: (r["iteration"], r["step"], r["stage"]))
    expected = []
    for r in raw:
        value = None if math.isnan(r["value"]) else r["value"]
        expected.append(entry(r["iteration"], r["stage"], r["step"], value, value, value, 1))
    assert total == 13 and history == expected
    equal_steps = [(p["step"], p["stage"]) for p in history[4:6]]
    assert equal_steps == [(4, "eval"), (4, "train")]  # rows with the same step stay apart
    assert len(metrics.metric_history(session, run.id, "loss", points=12)[1]) < 13


def test_long_series_buckets_are_contiguous_step_ranges_within_iterations(session) -> None:
    run = runs.create_run(session, small_config())
    batch = points("loss", range(5000), iteration=0) + points("loss", range(3, 5010), iteration=1)
    metrics.ingest_metrics(session, run.id, batch)
    session.commit()
    total, history = metrics.metric_history(session, run.id, "loss", points=100)
    assert total == 10_007 and len(history) == 100
    for it, steps in ((0, np.arange(5000)), (1, np.arange(3, 5010))):
        mine = [p for p in history if p["iteration"] == it]
        assert len(mine) == 50 and mine[0]["step"] == steps[0]  # each curve starts at its own first step
        starts = [p["step"] for p in mine] + [int(steps[-1]) + 1]
        widths = np.diff(starts)
        assert widths.max() - widths.min() <= 1  # equal step ranges
        for p, lo, hi in zip(mine, starts, starts[1:], strict=False):
            values = np.sin(np.arange(lo, hi))
            assert p["count"] == hi - lo
            expected = [values.mean(), values.min(), values.max()]
            np.testing.assert_allclose([p["value"], p["min"], p["max"]], expected, rtol=1e-9, atol=1e-12)


def test_sparse_and_huge_steps(session) -> None:
    run = runs.create_run(session, small_config())
    sparse = points("every10", range(0, 1000, 10))
    top = 2**63 - 1
    huge = [{"key": "huge", "step": s, "value": float(i)} for i, s in enumerate((0, 1, 2**62, top))]
    metrics.ingest_metrics(session, run.id, sparse + huge)
    _, history = metrics.metric_history(session, run.id, "every10", points=10)
    assert [p["step"] for p in history] == list(range(0, 1000, 100)) and {p["count"] for p in history} == {10}
    # Step range 2**63: offset·3 would overflow 64 bits, so 3 ranges of ⌈2**63 / 3⌉ steps instead.
    _, history = metrics.metric_history(session, run.id, "huge", points=3)
    assert [(p["step"], p["count"], p["value"]) for p in history] == [
        (0, 2, 0.5),
        (2**62, 1, 2.0),
        (top, 1, 3.0),
    ]


def test_more_iterations_than_points_gives_one_bucket_each(session) -> None:
    run = runs.create_run(session, small_config())
    batch = [p for it in range(4) for p in points("x", range(it, it + 3), iteration=it)]
    metrics.ingest_metrics(session, run.id, batch)
    total, history = metrics.metric_history(session, run.id, "x", points=2)
    assert total == 12 and [(p["iteration"], p["step"], p["count"]) for p in history] == [
        (0, 0, 3), (1, 1, 3), (2, 2, 3), (3, 3, 3)
    ]  # fmt: skip
    assert len(history) <= 2 + 4 - 1


def test_histories_of_several_keys(session) -> None:
    run = runs.create_run(session, small_config())
    metrics.ingest_metrics(session, run.id, points("a", range(300)) + points("b", range(50)))
    found = metrics.metric_histories(session, run.id, None, points=100)
    assert {k: (total, len(h)) for k, (total, h) in found.items()} == {"a": (300, 100), "b": (50, 50)}
    assert list(found) == ["a", "b"]
    assert found["a"][1] == metrics.metric_history(session, run.id, "a", points=100)[1]
    assert metrics.metric_history(session, run.id, "missing") == (0, [])
    assert metrics.metric_histories(session, run.id, [], points=100) == {}


def test_histories_of_many_keys_and_iterations_span_several_queries(session) -> None:
    """Keys with more iterations than one branch covers, and more branches than one query holds."""
    run = runs.create_run(session, small_config())
    n_keys, n_iterations = metrics.BRANCHES_PER_QUERY // 2 + 1, metrics.ITERATIONS_PER_BRANCH + 1
    batch = [
        p
        for k in range(n_keys)
        for it in range(n_iterations)
        for p in points(f"k{k:03d}", range(3), iteration=it)
    ]
    metrics.ingest_metrics(session, run.id, batch)
    # 3 rows (steps 0-2) per iteration, 2 buckets each: steps {0, 1} and {2}.
    found = metrics.metric_histories(session, run.id, None, points=2 * n_iterations)
    assert len(found) == n_keys
    expected = [(it, step, count) for it in range(n_iterations) for step, count in ((0, 2), (2, 1))]
    for total, history in found.values():
        assert total == 3 * n_iterations
        assert [(p["iteration"], p["step"], p["count"]) for p in history] == expected
    filtered = metrics.metric_histories(
        session, run.id, ["k000", "k001"], points=2, iteration=3, stage="train"
    )
    assert {k: [(p["step"], p["count"]) for p in h] for k, (_, h) in filtered.items()} == {
        "k000": [(0, 2), (2, 1)], "k001": [(0, 2), (2, 1)]
    }  # fmt: skip


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


def attempt_points(
    key: str, steps: range, *, attempt: int, stage: str = "train", value: float = 0.0, iteration: int = 0
) -> list[dict]:
    point = {"iteration": iteration, "stage": stage, "attempt": attempt, "key": key, "value": value}
    return [{**point, "step": s} for s in steps]


def test_a_retried_stage_logs_beside_its_first_attempt_and_history_shows_the_latest(session) -> None:
    run = runs.create_run(session, small_config())
    first = attempt_points("loss", range(1, 101), attempt=1, value=1.0)  # crashed at step 100
    second = attempt_points("loss", range(1, 51), attempt=2, value=2.0)  # the retry, at step 50
    assert metrics.ingest_metrics(session, run.id, first + second) == 150, "no step of the retry is lost"
    session.commit()
    total, raw = metrics.metric_history(session, run.id, "loss", points=500)
    assert total == 50 and [p["step"] for p in raw] == list(range(1, 51))
    assert {(p["attempt"], p["value"]) for p in raw} == {(2, 2.0)}
    total, buckets = metrics.metric_history(session, run.id, "loss", points=5)
    assert total == 50 and [(p["step"], p["count"], p["value"], p["attempt"]) for p in buckets] == [
        (s, 10, 2.0, 2) for s in (1, 11, 21, 31, 41)
    ]
    total, old = metrics.metric_history(session, run.id, "loss", points=4, attempt=1)
    assert total == 100 and [(p["count"], p["value"]) for p in old] == [(25, 1.0)] * 4


def test_latest_attempt_is_chosen_per_iteration_and_stage(session) -> None:
    """`seconds` is logged by every stage; only the retried (iteration, stage) loses its old rows."""
    run = runs.create_run(session, small_config())
    batch = (
        attempt_points("seconds", range(1), attempt=1, stage="rank", value=5.0)
        + attempt_points("seconds", range(1), attempt=1, stage="train", value=7.0)
        + attempt_points("seconds", range(1), attempt=3, stage="train", value=9.0)
        + attempt_points("seconds", range(1), attempt=1, stage="train", value=11.0, iteration=1)
        + attempt_points("seconds", range(1), attempt=0, stage="probe", value=13.0)  # sent to the API
    )
    metrics.ingest_metrics(session, run.id, batch)
    session.commit()
    expected = [(0, "probe", 0, 13.0), (0, "rank", 1, 5.0), (0, "train", 3, 9.0), (1, "train", 1, 11.0)]
    for points in (100, 2):  # as stored, and bucketed (one bucket per iteration)
        total, history = metrics.metric_history(session, run.id, "seconds", points=points)
        assert total == 4
        if points == 100:
            assert [(p["iteration"], p["stage"], p["attempt"], p["value"]) for p in history] == expected
        else:
            assert [(p["iteration"], p["count"], p["value"]) for p in history] == [(0, 3, 9.0), (1, 1, 11.0)]
    histories = metrics.metric_histories(session, run.id, points=100)
    assert histories["seconds"][0] == 4


def test_eval_metrics_come_from_the_latest_attempt(session) -> None:
    run = runs.create_run(session, small_config())
    batch = attempt_points("alpaca_eval/win_rate", range(1), attempt=1, stage="evaluate", value=99.9)
    batch += attempt_points("alpaca_eval/win_rate", range(1), attempt=2, stage="evaluate", value=41.5)
    metrics.ingest_metrics(session, run.id, batch)
    session.commit()
    assert metrics.eval_metrics_by_iteration(session, run.id) == {0: {"alpaca_eval/win_rate": 41.5}}
