"""Idempotency-Key on POST /runs, POST /runs/{id}/clone and POST /sweeps, on SQLite and
PostgreSQL: replays, conflicts, expiry, scopes, and 20 concurrent submissions with one key
through a real uvicorn server."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import Request
from sqlalchemy import func, select, update

from backend.api.idempotency import idempotency_scope
from backend.app import create_app
from backend.db import get_sessionmaker
from backend.deps import get_launcher
from backend.store.idempotency import KEY_TTL
from backend.store.models import IdempotencyKey, Run, Sweep, utcnow
from tests.backend.conftest import TOKEN, Api, RecordingLauncher, make_settings, run_config, serve

CONCURRENT = 20
GRID = {"objective.alpha": [0.03, 0.05]}


def count(api_or_url: Api | str, model: type = Run) -> int:
    url = api_or_url if isinstance(api_or_url, str) else api_or_url.settings.resolved_database_url
    with get_sessionmaker(url)() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def post_run(api: Api, body: dict, key: str | None) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return api.client.post("/api/v1/runs", json=body, headers=headers)


def test_same_key_and_body_returns_the_first_run(api: Api) -> None:
    key, body = uuid.uuid4().hex, run_config()
    before = count(api)
    first = post_run(api, body, key)
    again = post_run(api, body, key)
    assert first.status_code == 201 and "idempotent-replayed" not in first.headers
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert count(api) == before + 1 and len(api.launcher.sent) == 1


def test_the_same_request_spelled_differently_is_a_replay(api: Api) -> None:
    key, body = uuid.uuid4().hex, run_config()
    first = post_run(api, body, key).json()
    # Defaults written out and keys in another order: the validated config is the same.
    spelled_out = dict(reversed(list({**body, "seed": 0, "generation": {"num_candidates": 4}}.items())))
    again = post_run(api, spelled_out, f'"{key}"')  # the IETF draft's quoted form names the same key
    assert again.status_code == 200 and again.json()["id"] == first["id"]


def test_same_key_with_another_body_is_a_409_naming_the_key(api: Api) -> None:
    key = "retry-" + uuid.uuid4().hex
    body = run_config()
    post_run(api, body, key)
    before = count(api)
    response = post_run(api, {**body, "seed": 7}, key)
    assert response.status_code == 409
    assert key in response.json()["detail"] and "different request" in response.json()["detail"]
    assert count(api) == before
    sweep = {"name": "grid", "base_config": body, "grid": GRID}
    assert api.client.post("/api/v1/sweeps", json=sweep, headers={"Idempotency-Key": key}).status_code == 409


def test_without_a_key_every_request_creates_a_run(api: Api) -> None:
    body, before = run_config(), count(api)
    assert post_run(api, body, None).status_code == post_run(api, body, None).status_code == 201
    assert count(api) == before + 2


@pytest.mark.parametrize("bad", ["", "has space", "x" * 256, "é", '"unclosed', "a,b"])
def test_malformed_keys_are_a_422_naming_the_header(api: Api, bad: str) -> None:
    before = count(api)
    response = api.client.post(
        "/api/v1/runs", json=run_config(), headers={"Idempotency-Key": bad.encode("utf-8")}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
    assert count(api) == before


def test_an_expired_key_creates_a_new_run_and_old_keys_are_purged(api: Api) -> None:
    key, stale, body = uuid.uuid4().hex, uuid.uuid4().hex, run_config()
    first = post_run(api, body, key).json()
    post_run(api, run_config(), stale)
    with get_sessionmaker(api.settings.resolved_database_url)() as session:
        aged = utcnow() - KEY_TTL - timedelta(minutes=1)
        session.execute(
            update(IdempotencyKey).where(IdempotencyKey.key.in_([key, stale])).values(created_at=aged)
        )
        session.commit()
    again = post_run(api, body, key)
    assert again.status_code == 201 and again.json()["id"] != first["id"]
    assert post_run(api, body, key).json()["id"] == again.json()["id"]  # the new key holds
    with get_sessionmaker(api.settings.resolved_database_url)() as session:
        keys = set(session.scalars(select(IdempotencyKey.key)).all())
    assert key in keys and stale not in keys


def test_keys_are_scoped_by_principal(api: Api) -> None:
    # Stands in for per-user tokens: the scope function is the one place that names the principal.
    def principal(request: Request) -> str:
        return request.headers["x-principal"]

    api.client.app.dependency_overrides[idempotency_scope] = principal
    key, body = uuid.uuid4().hex, run_config()
    alice = api.client.post(
        "/api/v1/runs", json=body, headers={"Idempotency-Key": key, "x-principal": "alice"}
    )
    bob = api.client.post(
        "/api/v1/runs", json={**body, "seed": 3}, headers={"Idempotency-Key": key, "x-principal": "bob"}
    )
    assert alice.status_code == bob.status_code == 201 and alice.json()["id"] != bob.json()["id"]


def test_sweeps_replay_and_conflict(api: Api) -> None:
    key = uuid.uuid4().hex
    body = {"name": "grid", "base_config": run_config(iterations=1), "grid": GRID, "max_concurrent": 1}
    runs_before, sweeps_before = count(api), count(api, Sweep)
    first = api.client.post("/api/v1/sweeps", json=body, headers={"Idempotency-Key": key})
    again = api.client.post("/api/v1/sweeps", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"] and len(again.json()["runs"]) == 2
    assert count(api) == runs_before + 2 and count(api, Sweep) == sweeps_before + 1
    assert len(api.launcher.sent) == 1
    other = api.client.post(
        "/api/v1/sweeps", json={**body, "max_concurrent": 2}, headers={"Idempotency-Key": key}
    )
    assert other.status_code == 409 and key in other.json()["detail"]
    reused_for_a_run = post_run(api, run_config(), key)
    assert reused_for_a_run.status_code == 409


def post_clone(api: Api, run_id: int, overrides: dict, key: str | None) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return api.client.post(f"/api/v1/runs/{run_id}/clone", json={"overrides": overrides}, headers=headers)


def test_clone_with_the_same_key_source_and_overrides_returns_the_first_clone(api: Api) -> None:
    parent = post_run(api, run_config(), None).json()
    key, sent, before = uuid.uuid4().hex, len(api.launcher.sent), count(api)
    first = post_clone(api, parent["id"], {"objective.alpha": 0.03}, key)
    again = post_clone(api, parent["id"], {"objective.alpha": 0.03}, key)
    assert first.status_code == 201 and "idempotent-replayed" not in first.headers
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"] and first.json()["parent_run_id"] == parent["id"]
    assert first.json()["config"]["objective"]["alpha"] == 0.03
    assert count(api) == before + 1 and len(api.launcher.sent) == sent + 1
    # The same clone spelled differently (a default written out) is the same request.
    spelled_out = post_clone(api, parent["id"], {"seed": 0, "objective.alpha": 0.03}, f'"{key}"')
    assert spelled_out.status_code == 200 and spelled_out.json()["id"] == first.json()["id"]


def test_clone_key_with_another_source_or_overrides_is_a_409(api: Api) -> None:
    parent = post_run(api, run_config(), None).json()
    other = post_run(api, run_config(seed=5), None).json()
    key = "clone-" + uuid.uuid4().hex
    assert post_clone(api, parent["id"], {"objective.alpha": 0.03}, key).status_code == 201
    before = count(api)
    attempts = ((parent["id"], {"objective.alpha": 0.07}), (other["id"], {"objective.alpha": 0.03}))
    for source, overrides in attempts:
        response = post_clone(api, source, overrides, key)
        assert response.status_code == 409, (source, overrides)
        assert key in response.json()["detail"] and "different request" in response.json()["detail"]
    assert post_run(api, run_config(), key).status_code == 409  # nor for a fresh run
    assert count(api) == before
    run_key = uuid.uuid4().hex  # and a key of POST /runs is not a clone's
    post_run(api, run_config(), run_key)
    assert post_clone(api, parent["id"], {}, run_key).status_code == 409


def test_clone_without_a_key_creates_a_clone_each_time(api: Api) -> None:
    parent = post_run(api, run_config(), None).json()
    before = count(api)
    first, second = (post_clone(api, parent["id"], {}, None) for _ in range(2))
    assert first.status_code == second.status_code == 201 and first.json()["id"] != second.json()["id"]
    assert count(api) == before + 2


def test_an_invalid_clone_is_a_422_and_does_not_hold_the_key(api: Api) -> None:
    parent = post_run(api, run_config(), None).json()
    key, before = uuid.uuid4().hex, count(api)
    refused = post_clone(api, parent["id"], {"objective.alpha": -1.0}, key)
    assert refused.status_code == 422 and count(api) == before
    assert post_clone(api, parent["id"], {"objective.alpha": 0.03}, key).status_code == 201


# ----------------------------------------------------------------------------- concurrency


@pytest.fixture
def server(db_url: str, tmp_path: Path) -> Iterator[str]:
    """uvicorn serving the app on the module's database (SQLite, then PostgreSQL)."""
    app = create_app(make_settings(tmp_path, db_url))
    launcher = RecordingLauncher()
    app.dependency_overrides[get_launcher] = lambda: launcher
    with serve(app) as url:
        yield url


def test_concurrent_submissions_with_one_key_create_one_run(server: str, db_url: str) -> None:
    key, body = uuid.uuid4().hex, run_config(name=f"race-{uuid.uuid4().hex[:6]}")
    headers = {"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": key}
    barrier = threading.Barrier(CONCURRENT)

    def submit(_: int) -> tuple[int, int]:
        with httpx.Client(base_url=server, headers=headers, timeout=120) as http:
            barrier.wait()
            response = http.post("/api/v1/runs", json=body)
        return response.status_code, response.json()["id"]

    with ThreadPoolExecutor(CONCURRENT) as pool:
        results = list(pool.map(submit, range(CONCURRENT)))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * (CONCURRENT - 1) + [201], statuses
    assert len({run_id for _, run_id in results}) == 1
    with get_sessionmaker(db_url)() as session:
        created = session.scalar(select(func.count()).select_from(Run).where(Run.name == body["name"]))
    assert created == 1

    conflicting = httpx.post(f"{server}/api/v1/runs", json={**body, "seed": 1}, headers=headers, timeout=30)
    assert conflicting.status_code == 409 and key in conflicting.json()["detail"]


def test_concurrent_clones_with_one_key_create_one_clone(server: str, db_url: str) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    name = f"clone-race-{uuid.uuid4().hex[:6]}"
    parent = httpx.post(f"{server}/api/v1/runs", json=run_config(name=name), headers=auth, timeout=30).json()
    headers = {**auth, "Idempotency-Key": uuid.uuid4().hex}
    body = {"overrides": {"objective.alpha": 0.03}}
    barrier = threading.Barrier(CONCURRENT)

    def clone(_: int) -> tuple[int, int]:
        with httpx.Client(base_url=server, headers=headers, timeout=120) as http:
            barrier.wait()
            response = http.post(f"/api/v1/runs/{parent['id']}/clone", json=body)
        return response.status_code, response.json()["id"]

    with ThreadPoolExecutor(CONCURRENT) as pool:
        results = list(pool.map(clone, range(CONCURRENT)))
    assert sorted(status for status, _ in results) == [200] * (CONCURRENT - 1) + [201]
    assert len({run_id for _, run_id in results}) == 1
    with get_sessionmaker(db_url)() as session:
        clones = select(func.count()).select_from(Run).where(Run.parent_run_id == parent["id"])
        assert session.scalar(clones) == 1
