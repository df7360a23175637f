"""/sweeps over HTTP: grid expansion, concurrency bound, nothing stored on a bad point."""

from __future__ import annotations

import time
import tracemalloc

from backend.db import get_sessionmaker
from backend.lifecycle import launch_waiting_sweep_runs
from backend.store import runs, stages
from tests.backend.conftest import Api, run_config

GRID = {"objective.alpha": [0.03, 0.05, 0.07], "objective.lambda_": [0.2, 0.5]}


def test_sweep_creates_one_child_per_point_and_bounds_concurrency(api: Api) -> None:
    body = {"name": "grid", "base_config": run_config(iterations=1), "grid": GRID, "max_concurrent": 2}
    response = api.client.post("/api/v1/sweeps", json=body)
    assert response.status_code == 201, response.text
    sweep = response.json()
    assert len(sweep["runs"]) == 6 and sweep["status_counts"] == {"queued": 6}
    points = {
        (r["sweep_point"]["objective.alpha"], r["sweep_point"]["objective.lambda_"]) for r in sweep["runs"]
    }
    assert points == {(a, lam) for a in GRID["objective.alpha"] for lam in GRID["objective.lambda_"]}
    assert all(
        r["config"]["objective"]["alpha"] == r["sweep_point"]["objective.alpha"] for r in sweep["runs"]
    )
    launched = [r for r in sweep["runs"] if r["launched_at"] is not None]
    assert len(launched) == 2 and len(api.launcher.sent) == 2

    # The worker finishes one child and calls the lifecycle function: exactly one more starts.
    with get_sessionmaker(api.settings.resolved_database_url)() as session:
        stage = runs.first_open_stage(session, launched[0]["id"])
        while stage is not None:
            stages.claim_stage(session, stage.id)
            stages.complete_stage(session, stage.id)
            stage = stages.next_stage(session, stage.id)
        session.commit()
        assert len(launch_waiting_sweep_runs(session, sweep["id"], api.launcher)) == 1
    # Cancelling a child over HTTP frees its slot too.
    api.client.post(f"/api/v1/runs/{launched[1]['id']}/cancel")
    again = api.client.get(f"/api/v1/sweeps/{sweep['id']}").json()
    assert again["status_counts"] == {"succeeded": 1, "cancelled": 1, "queued": 4}
    assert sum(r["launched_at"] is not None for r in again["runs"] if r["status"] == "queued") == 2
    listed = api.client.get("/api/v1/runs", params={"sweep_id": sweep["id"]}).json()
    assert listed["total"] == 6


def test_invalid_grid_point_is_422_and_stores_nothing(api: Api) -> None:
    before = api.client.get("/api/v1/runs").json()["total"]
    body = {"name": "bad", "base_config": run_config(), "grid": {"objective.alpha": [0.05, -1]}}
    response = api.client.post("/api/v1/sweeps", json=body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][:3] == ["body", "grid", "objective.alpha"]
    unused = {
        "name": "bad",
        "base_config": run_config(objective={"name": "dpo"}),
        "grid": {"objective.alpha": [1]},
    }
    assert api.client.post("/api/v1/sweeps", json=unused).status_code == 422
    assert api.client.post("/api/v1/sweeps", json={**body, "grid": {}}).status_code == 422
    assert api.client.get("/api/v1/runs").json()["total"] == before and api.launcher.sent == []
    assert api.client.get("/api/v1/sweeps/2147483647").status_code == 404


def test_a_huge_grid_is_refused_fast_with_bounded_memory(api: Api) -> None:
    """4 keys × 64 values = 16.8 M points: the product's size is computed, never the product
    (which took 29 s and 3.6 GB before). bench/request_limits.py prints the figures."""
    values = [round(0.01 * i, 2) for i in range(64)]
    grid = {"objective.alpha": values, "objective.beta": values, "objective.lambda_": values, "seed": values}
    body = {"name": "huge", "base_config": run_config(), "grid": grid}
    api.client.post("/api/v1/sweeps", json={**body, "grid": {"seed": [1]}})  # warm the route up
    before = api.client.get("/api/v1/runs").json()["total"]
    tracemalloc.start()
    started = time.perf_counter()
    try:
        response = api.client.post("/api/v1/sweeps", json=body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    seconds = time.perf_counter() - started
    assert response.status_code == 422
    error = response.json()["detail"][0]
    assert error["loc"] == ["body", "grid"] and "16777216 points exceed the limit of 256" in error["msg"]
    assert peak < 8 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"
    assert seconds < 5, f"{seconds:.1f} s"  # generous: ~50 ms here; the old code took 29 s
    assert api.client.get("/api/v1/runs").json()["total"] == before
