"""/runs over HTTP on SQLite and PostgreSQL: create, list, get, cancel, resume, clone, refusals."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from sqlalchemy import event, func, select

from backend.db import get_engine, get_sessionmaker
from backend.store import eval_samples, stages
from backend.store.models import Run
from tests.backend.api.test_progress import _judged
from tests.backend.conftest import Api, run_config


def count_runs(api: Api) -> int:
    with get_sessionmaker(api.settings.resolved_database_url)() as session:
        return session.scalar(select(func.count()).select_from(Run))


def test_create_stores_and_launches(api: Api) -> None:
    run = api.create_run(iterations=3)
    assert run["status"] == "queued" and run["objective"] == "aipo"
    assert run["config"]["iterations"] == 3 and run["config"]["training"]["batch_size"] == 8
    assert run["progress"] == {
        "stages_done": 0,
        "stages_total": 15,
        "fraction": 0.0,
        "current_stage": "self_instruct",
        "current_iteration": 0,
    }
    assert api.launcher.sent[-1][0] == "self_instruct"
    assert api.client.get(f"/api/v1/runs/{run['id']}").json()["id"] == run["id"]
    assert api.client.get("/api/v1/runs/2147483647").status_code == 404


def test_bad_config_gives_field_paths_and_stores_nothing(api: Api) -> None:
    before = count_runs(api)
    bad = run_config(iterations=0, objective={"name": "dpo", "alpha": 0.1}, training={"batch_sise": 8})
    response = api.client.post("/api/v1/runs", json=bad)
    assert response.status_code == 422
    locs = {tuple(e["loc"]) for e in response.json()["detail"]}
    assert ("body", "iterations") in locs
    assert ("body", "objective") in locs
    assert ("body", "training", "batch_sise") in locs
    assert count_runs(api) == before and api.launcher.sent == []


def test_local_paths_must_be_under_allowed_roots(api: Api, tmp_path_factory) -> None:
    outside = tmp_path_factory.mktemp("outside") / "pool.jsonl"
    outside.write_text("{}\n")
    response = api.client.post("/api/v1/runs", json=run_config(prompt_pool=str(outside), model="/etc"))
    assert response.status_code == 422
    errors = {tuple(e["loc"]): e["type"] for e in response.json()["detail"]}
    assert errors == {("body", "prompt_pool"): "path_not_allowed", ("body", "model"): "path_not_allowed"}
    escape = api.home / ".." / outside.parent.name / "pool.jsonl"
    assert api.client.post("/api/v1/runs", json=run_config(initial_pairs=str(escape))).status_code == 422
    inside = api.home / "pairs.jsonl"
    inside.write_text('{"prompt": "Name a prime.", "chosen": "7", "rejected": "8"}\n')
    assert api.client.post("/api/v1/runs", json=run_config(initial_pairs=str(inside))).status_code == 201
    hub = run_config(model="HuggingFaceTB/SmolLM2-135M")
    assert api.client.post("/api/v1/runs", json=hub).status_code == 422  # not on the default allow-list
    api.settings.allowed_hub_models = ["HuggingFaceTB/*"]
    assert api.client.post("/api/v1/runs", json=hub).status_code == 201


def test_trust_remote_code_refused_unless_enabled(api: Api) -> None:
    response = api.client.post("/api/v1/runs", json=run_config(trust_remote_code=True))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "trust_remote_code"]
    api.settings.allow_trust_remote_code = True
    assert api.client.post("/api/v1/runs", json=run_config(trust_remote_code=True)).status_code == 201


def test_nul_characters_are_a_422_not_a_500(api: Api) -> None:
    response = api.client.post("/api/v1/runs", json=run_config(name="bad\x00name"))
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "name"]
    assert api.client.get("/api/v1/runs", params={"name": "a\x00"}).status_code == 422


def test_list_filters_and_pagination(api: Api) -> None:
    tag = f"listing-{api.home.name}"
    for i in range(3):
        api.create_run(name=f"{tag}-{i}", objective={"name": "dpo"} if i == 1 else {"name": "aipo"})
    page = api.client.get("/api/v1/runs", params={"name": tag, "limit": 2}).json()
    assert page["total"] == 3 and [r["name"] for r in page["items"]] == [f"{tag}-2", f"{tag}-1"]
    second = api.client.get("/api/v1/runs", params={"name": tag, "limit": 2, "offset": 2}).json()
    assert [r["name"] for r in second["items"]] == [f"{tag}-0"]
    dpo = api.client.get("/api/v1/runs", params={"name": tag, "objective": "dpo"}).json()
    assert [r["name"] for r in dpo["items"]] == [f"{tag}-1"]
    queued = api.client.get("/api/v1/runs", params={"name": tag, "status": "queued"}).json()
    assert queued["total"] == 3
    assert api.client.get("/api/v1/runs", params={"status": "nope"}).status_code == 422


def test_cancel_then_resume(api: Api) -> None:
    run = api.create_run()
    stage_id = api.launcher.sent[-1][1]
    with get_sessionmaker(api.settings.resolved_database_url)() as session:
        stages.claim_stage(session, stage_id)
        session.commit()
    cancelled = api.client.post(f"/api/v1/runs/{run['id']}/cancel").json()
    assert cancelled["status"] == "cancelled" and api.launcher.revoked
    with get_sessionmaker(api.settings.resolved_database_url)() as session:
        assert not stages.heartbeat(session, stage_id)  # the worker's signal to kill the stage
    resumed = api.client.post(f"/api/v1/runs/{run['id']}/resume")
    assert resumed.status_code == 200 and resumed.json()["status"] == "queued"
    assert api.launcher.sent[-1][:2] == ("self_instruct", stage_id)
    assert api.client.post(f"/api/v1/runs/{run['id']}/resume").status_code == 409


def test_clone_with_overrides(api: Api) -> None:
    parent = api.create_run()
    response = api.client.post(
        f"/api/v1/runs/{parent['id']}/clone", json={"overrides": {"objective.alpha": 0.03}}
    )
    assert response.status_code == 201
    clone = response.json()
    assert clone["parent_run_id"] == parent["id"] and clone["config"]["objective"]["alpha"] == 0.03
    assert clone["name"] == f"{parent['name']} (clone)" and clone["id"] != parent["id"]
    bad = api.client.post(f"/api/v1/runs/{parent['id']}/clone", json={"overrides": {"objective.beta": -1}})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][:3] == ["body", "overrides", "objective"]
    not_section = api.client.post(f"/api/v1/runs/{parent['id']}/clone", json={"overrides": {"name.x": 1}})
    assert not_section.status_code == 422


def _store_judgements(api: Api, run_ids: list[int], iterations: int) -> None:
    """θ_0 and θ_1 … θ_iterations of each run judged on 40 alpaca_eval prompts."""
    rng = np.random.default_rng(0)
    with get_sessionmaker(api.settings.resolved_database_url)() as session:
        for run_id in run_ids:
            eval_samples.replace_eval_samples(
                session, run_id, 0, "alpaca_eval", _judged(rng, 0.0), evaluated="base"
            )
            for iteration in range(iterations):
                records = _judged(rng, 0.3 * (iteration + 1))
                eval_samples.replace_eval_samples(session, run_id, iteration, "alpaca_eval", records)
        session.commit()


def test_runs_carry_their_latest_evaluation(api: Api) -> None:
    """The run list serves what the runs table shows: the latest θ_j with its judge, sample and SEs,
    equal to the same evaluation on /iterations (one LC fit over the run)."""
    run = api.create_run(iterations=2, evaluation={"limit": 40, "seed": 7})
    fresh = api.create_run(iterations=1)
    _store_judgements(api, [run["id"]], iterations=2)

    listed = {r["id"]: r for r in api.client.get("/api/v1/runs").json()["items"]}
    latest = listed[run["id"]]["latest_evaluation"]
    assert listed[fresh["id"]]["latest_evaluation"] is None
    served = api.client.get(f"/api/v1/runs/{run['id']}/iterations").json()["items"][1]["evaluations"]
    expected = served["alpaca_eval"]
    assert (latest["benchmark"], latest["evaluated"], latest["iteration"], latest["policy_index"]) == (
        "alpaca_eval", "policy", 1, 2,
    )  # fmt: skip
    assert latest["seed"] == 7 and latest["n"] == 40 and latest["self_judged"] is False
    assert latest["judge_label"] == "base model θ_0 (tiny-random-llama), fixed"
    for key in ("win_rate", "win_rate_se", "lc_win_rate", "lc_win_rate_se", "avg_length", "judge"):
        assert latest[key] == expected[key], key
    assert api.client.get(f"/api/v1/runs/{run['id']}").json()["latest_evaluation"] == latest

    # A re-stored evaluation (a retried stage) shows at once in the list, never a stale summary.
    redone = [
        {**r, "preference": 2.0 if i % 2 else 1.0} for i, r in enumerate(_judged(np.random.default_rng(3), 0))
    ]
    with get_sessionmaker(api.settings.resolved_database_url)() as session:
        eval_samples.replace_eval_samples(session, run["id"], 1, "alpaca_eval", redone)
        session.commit()
    again = api.client.get("/api/v1/runs").json()["items"]
    assert next(r for r in again if r["id"] == run["id"])["latest_evaluation"]["win_rate"] == 50.0


@contextmanager
def counted_queries(url: str) -> Iterator[list[str]]:
    """The SQL statements sent on the API's engine while the block runs."""
    statements: list[str] = []
    engine = get_engine(url)

    def record(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_listing_50_evaluated_runs_costs_a_bounded_number_of_queries(api: Api) -> None:
    """No query per run: the page's progress and latest evaluations are read for all runs at once."""
    runs = [api.create_run(iterations=1, name=f"bounded-{i}") for i in range(50)]
    _store_judgements(api, [r["id"] for r in runs], iterations=1)
    url = api.settings.resolved_database_url

    with counted_queries(url) as cold:
        body = api.client.get("/api/v1/runs", params={"name": "bounded-", "limit": 50}).json()
    with counted_queries(url) as warm:
        again = api.client.get("/api/v1/runs", params={"name": "bounded-", "limit": 50}).json()["items"]

    items = body["items"]
    assert body["active"] >= 50  # the new runs are queued (the count ignores the filters)
    assert len(items) == 50 and all(r["latest_evaluation"]["policy_index"] == 1 for r in items)
    assert again == items
    # token, count, page, active count, progress (2), evaluation fingerprints, judgements of uncached runs
    assert len(cold) <= 10, cold
    assert len(warm) <= len(cold) - 1, warm  # cached summaries: the judgements are not read again
