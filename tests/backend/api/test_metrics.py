"""/runs/{id}/metrics over HTTP: bulk ingest (≥1000 points), idempotent retries, downsampled history."""

from __future__ import annotations

from backend.db import session_scope
from backend.store.metrics import ingest_metrics
from tests.backend.conftest import Api


def batch(start: int, n: int, key: str = "loss") -> dict:
    return {
        "points": [
            {"iteration": 0, "stage": "probe", "key": key, "step": s, "value": 1.0 / (s + 1)}
            for s in range(start, start + n)
        ]
    }


def test_bulk_ingest_is_idempotent(api: Api) -> None:
    run = api.create_run()
    url = f"/api/v1/runs/{run['id']}/metrics"
    first = api.client.post(url, json=batch(0, 2000))
    assert first.status_code == 200 and first.json() == {"received": 2000, "inserted": 2000}
    assert api.client.post(url, json=batch(0, 2000)).json() == {"received": 2000, "inserted": 0}
    assert api.client.post(url, json=batch(1500, 1000)).json() == {"received": 1000, "inserted": 500}
    history = api.client.get(url, params={"key": "loss", "points": 5000}).json()["series"]
    assert history[0]["total"] == 2500 and len(history[0]["points"]) == 2500
    assert [p["step"] for p in history[0]["points"]] == list(range(2500))


def test_history_is_downsampled_server_side(api: Api) -> None:
    run = api.create_run()
    url = f"/api/v1/runs/{run['id']}/metrics"
    api.client.post(url, json=batch(0, 3000))
    api.client.post(url, json=batch(0, 10, key="reward/chosen"))
    response = api.client.get(url, params={"key": ["loss", "reward/chosen"], "points": 100}).json()
    loss, reward = response["series"]
    assert loss["key"] == "loss" and loss["total"] == 3000 and len(loss["points"]) == 100
    assert sum(p["count"] for p in loss["points"]) == 3000
    assert loss["points"][0]["value"] == sum(1.0 / (s + 1) for s in range(30)) / 30
    assert reward["total"] == 10 and len(reward["points"]) == 10
    everything = api.client.get(url, params={"points": 50}).json()["series"]
    assert {s["key"] for s in everything} == {"loss", "reward/chosen"}
    keys = api.client.get(f"{url}/keys").json()["items"]
    assert keys == [{"key": "loss", "count": 3000}, {"key": "reward/chosen", "count": 10}]


def test_history_buckets_stay_within_iterations(api: Api) -> None:
    run = api.create_run()
    url = f"/api/v1/runs/{run['id']}/metrics"
    for iteration, steps in ((0, range(0, 600)), (1, range(600, 1000))):
        points = [{"iteration": iteration, "stage": "probe", "key": "loss", "step": s, "value": float(s)}
                  for s in steps]  # fmt: skip
        assert api.client.post(url, json={"points": points}).status_code == 200
    series = api.client.get(url, params={"key": "loss", "points": 10}).json()["series"][0]
    assert series["total"] == 1000
    # 6 buckets of 100 steps for iteration 0, 4 for iteration 1; each point is its bucket's summary.
    assert [(p["iteration"], p["step"], p["count"]) for p in series["points"]] == [
        (0, s, 100) for s in range(0, 600, 100)
    ] + [(1, s, 100) for s in range(600, 1000, 100)]
    first = series["points"][0]
    assert first == {"iteration": 0, "stage": "probe", "attempt": 0, "step": 0, "value": 49.5, "min": 0.0,
                     "max": 99.0, "count": 100}  # fmt: skip
    one = api.client.get(url, params={"key": "loss", "points": 10, "iteration": 1}).json()["series"][0]
    assert one["total"] == 400 and [p["step"] for p in one["points"]] == list(range(600, 1000, 40))


def test_invalid_points_are_rejected(api: Api) -> None:
    run = api.create_run()
    url = f"/api/v1/runs/{run['id']}/metrics"
    bad = {"points": [{"key": "", "step": -1, "value": 1.0}]}
    locs = {tuple(e["loc"]) for e in api.client.post(url, json=bad).json()["detail"]}
    assert locs == {("body", "points", 0, "key"), ("body", "points", 0, "step")}
    assert api.client.post(url, json={"points": []}).status_code == 422
    assert api.client.post("/api/v1/runs/2147483647/metrics", json=batch(0, 1)).status_code == 404


def test_pipeline_stage_names_are_reserved_for_workers(api: Api) -> None:
    """A client could otherwise write `alpaca_eval/win_rate` = 99.9 under "evaluate" before the
    worker, and (first write wins) the evaluation's own number would never be stored."""
    run = api.create_run()
    url = f"/api/v1/runs/{run['id']}/metrics"
    forged = {"iteration": 0, "stage": "evaluate", "key": "alpaca_eval/win_rate", "step": 0, "value": 99.9}
    fine = {"iteration": 0, "stage": "probe", "key": "loss", "step": 0, "value": 1.0}
    response = api.client.post(url, json={"points": [fine, forged]})
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "points", 1, "stage"]
    assert "key 'alpaca_eval/win_rate'" in error["msg"] and "stage 'evaluate' is reserved" in error["msg"]
    for stage in ("self_instruct", "generate", "rank", "train"):
        assert api.client.post(url, json={"points": [{**fine, "stage": stage}]}).status_code == 422
    assert api.client.get(f"{url}/keys").json()["items"] == [], "nothing of a refused batch is stored"
    with session_scope(api.settings.resolved_database_url) as session:  # what the worker writes
        ingest_metrics(session, run["id"], [{**forged, "value": 41.5, "attempt": 1}])
    iterations = api.client.get(f"/api/v1/runs/{run['id']}/iterations").json()["items"]
    assert iterations[0]["eval_metrics"]["alpaca_eval/win_rate"] == 41.5


def test_history_shows_the_latest_attempt_unless_asked(api: Api) -> None:
    run = api.create_run()
    url = f"/api/v1/runs/{run['id']}/metrics"
    curves = [
        {"stage": "train", "attempt": attempt, "key": "loss", "step": s, "value": float(attempt)}
        for attempt, steps in ((1, range(1, 41)), (2, range(1, 11)))
        for s in steps
    ]
    with session_scope(api.settings.resolved_database_url) as session:
        ingest_metrics(session, run["id"], curves)
    latest = api.client.get(url, params={"key": "loss"}).json()["series"][0]
    assert latest["total"] == 10
    assert {(p["attempt"], p["value"]) for p in latest["points"]} == {(2, 2.0)}
    first = api.client.get(url, params={"key": "loss", "attempt": 1, "points": 4}).json()["series"][0]
    assert first["total"] == 40 and [p["count"] for p in first["points"]] == [10] * 4
    assert {p["attempt"] for p in first["points"]} == {1}
