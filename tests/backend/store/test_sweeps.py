"""Sweeps: grid expansion and validation of every point (the concurrency bound: test_lifecycle.py)."""

from __future__ import annotations

import tracemalloc

import pytest

from backend.store import runs, sweeps
from tests.backend.conftest import small_config

GRID = {"objective.alpha": [0.03, 0.05, 0.07], "objective.lambda_": [0.2, 0.5]}


def test_expand_grid_is_the_cartesian_product() -> None:
    points = sweeps.expand_grid(GRID)
    assert len(points) == 6
    assert points[0] == {"objective.alpha": 0.03, "objective.lambda_": 0.2}
    assert points[-1] == {"objective.alpha": 0.07, "objective.lambda_": 0.5}
    with pytest.raises(ValueError, match="grid.a"):
        sweeps.expand_grid({"a": []})


def test_grid_size_is_arithmetic_and_bounded() -> None:
    assert sweeps.grid_size(GRID) == 6
    assert sweeps.grid_size({"a": list(range(256))[:64], "b": [1, 2, 3, 4]}) == 256
    values = list(range(64))
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"64 × 64 × 64 × 64 = 16777216 points exceed the limit of 256"):
            sweeps.expand_grid({f"k{i}": values for i in range(4)})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024  # the product is never built (building it took 3.6 GB)
    with pytest.raises(ValueError, match="grid.k: 65 values exceed the limit of 64"):
        sweeps.grid_size({"k": list(range(65))})


def test_an_invalid_point_names_itself() -> None:
    with pytest.raises(sweeps.GridPointError) as info:
        sweeps.child_configs(small_config(), {"objective.alpha": [0.05, -1.0]})
    assert info.value.point == {"objective.alpha": -1.0}


def test_runs_for_free_slots_counts_launched_children_only(session) -> None:
    grid = {"objective.alpha": [0.03, 0.05, 0.07]}
    sweep = sweeps.create_sweep(session, "slots", small_config(iterations=1), grid, max_concurrent=2)
    session.commit()
    children = sorted(run.id for run in sweep.runs)
    assert [run.id for run in sweeps.runs_for_free_slots(session, sweep.id)] == children[:2]
    session.rollback()  # nothing launched: every child still waits
    first = runs.get_run(session, children[0])
    runs.prepare_launch(session, first)  # launched, queued: occupies a slot
    session.commit()
    assert [run.id for run in sweeps.runs_for_free_slots(session, sweep.id)] == [children[1]]
    session.rollback()
    assert sweeps.runs_for_free_slots(session, 10**6) == []
