"""Sweeps: grid expansion, validation of every point, the concurrency bound."""

from __future__ import annotations

import tracemalloc

import pytest

from backend.store import runs, stages, sweeps
from tests.backend.conftest import RecordingLauncher, small_config

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


def finish(session, run_id: int) -> None:
    stage = runs.first_open_stage(session, run_id)
    while stage is not None:
        stages.claim_stage(session, stage.id)
        stages.complete_stage(session, stage.id)
        stage = stages.next_stage(session, stage.id)
    session.commit()


def test_concurrency_bound_and_launch_on_completion(session, launcher: RecordingLauncher) -> None:
    sweep = sweeps.create_sweep(session, "grid", small_config(iterations=1), GRID, max_concurrent=2)
    session.commit()
    children = [r.id for r in sweep.runs]
    assert len(children) == 6
    assert [r.config["objective"]["alpha"] for r in sweep.runs] == [0.03, 0.03, 0.05, 0.05, 0.07, 0.07]
    assert sweeps.launch_waiting_sweep_runs(session, sweep.id, launcher) == children[:2]
    assert sweeps.launch_waiting_sweep_runs(session, sweep.id, launcher) == []  # bound reached
    assert sweeps.sweeps_with_waiting_runs(session) and sweep.id in sweeps.sweeps_with_waiting_runs(session)
    finish(session, children[0])
    assert sweeps.launch_waiting_sweep_runs(session, sweep.id, launcher) == [children[2]]
    runs.cancel_run(session, children[1], launcher)  # cancel frees a slot by itself
    assert len({sid for _, sid, _ in launcher.sent}) == 4
    assert sweeps.sweep_status_counts(session, sweep.id) == {"succeeded": 1, "cancelled": 1, "queued": 4}
