"""50 concurrent HTTP clients ingest overlapping, retried batches into PostgreSQL through a real
uvicorn server: every distinct point must be stored exactly once."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select

from backend.app import create_app
from backend.db import get_sessionmaker
from backend.deps import get_launcher
from backend.migrate import upgrade
from backend.store.models import Metric
from tests.backend.conftest import TOKEN, RecordingLauncher, make_settings, run_config

CLIENTS = 50
POINTS_PER_BATCH = 1000


@pytest.fixture
def server(postgres_url: str, tmp_path) -> Iterator[str]:
    """uvicorn serving the app on 127.0.0.1:<random port>; yields its base URL."""
    upgrade(postgres_url)
    app = create_app(make_settings(tmp_path, postgres_url))
    app.dependency_overrides[get_launcher] = RecordingLauncher
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", limit_concurrency=200))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def client_batches(client: int) -> list[dict]:
    """Client c writes key k{c % 10}; neighbours on a key overlap by half, and every batch is sent twice."""
    key, offset = f"k{client % 10}", (client // 10) * POINTS_PER_BATCH // 2
    points = [
        {"iteration": 0, "stage": "probe", "key": key, "step": s, "value": float(s)}
        for s in range(offset, offset + POINTS_PER_BATCH)
    ]
    return [{"points": points}, {"points": points}]


def test_fifty_clients_store_every_point_exactly_once(server: str, postgres_url: str) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    run_id = httpx.post(f"{server}/api/v1/runs", json=run_config(), headers=headers, timeout=30).json()["id"]

    def work(client: int) -> int:
        inserted = 0
        with httpx.Client(base_url=server, headers=headers, timeout=120) as http:
            for body in client_batches(client):
                response = http.post(f"/api/v1/runs/{run_id}/metrics", json=body)
                response.raise_for_status()
                inserted += response.json()["inserted"]
        return inserted

    with ThreadPoolExecutor(CLIENTS) as pool:
        inserted = sum(pool.map(work, range(CLIENTS)))

    expected = {
        (f"k{c % 10}", s) for c in range(CLIENTS) for s in range((c // 10) * 500, (c // 10) * 500 + 1000)
    }
    with get_sessionmaker(postgres_url)() as session:
        rows = session.execute(
            select(Metric.key, Metric.step, func.count())
            .where(Metric.run_id == run_id)
            .group_by(Metric.key, Metric.step)
        ).all()
    assert {(key, step) for key, step, _ in rows} == expected
    assert all(count == 1 for _, _, count in rows)
    assert inserted == len(expected)  # the API's "inserted" counts agree with what was stored
