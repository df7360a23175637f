"""Fixtures for the worker tests: a migrated store per test (SQLite, or both SQLite and
PostgreSQL for the fencing tests), broker wake-up inspection."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aipo_core.config import RunConfig
from backend.broker import make_celery_app
from backend.db import dispose_engines, session_scope
from backend.launcher import CeleryLauncher
from backend.migrate import upgrade
from backend.settings import Settings, get_settings
from backend.store.runs import create_run
from tests.backend.conftest import fresh_postgres_url  # noqa: F401 - a fixture used below

#: Short timings so that supervision and reconciliation happen within a test's patience.
FAST_TIMINGS = {
    "AIPO_STAGE_HEARTBEAT_INTERVAL_S": "0.2",
    "AIPO_STAGE_HEARTBEAT_TIMEOUT_S": "6",  # lease: 6 - 1 - 2 × 0.2 = 4.6 s
    "AIPO_STAGE_QUEUED_TIMEOUT_S": "3",
    "AIPO_RECONCILE_INTERVAL_S": "0.5",
    "AIPO_STAGE_KILL_GRACE_S": "1",
}


def _migrated_store(home: Path, monkeypatch: pytest.MonkeyPatch, database_url: str | None) -> Settings:
    monkeypatch.setenv("AIPO_HOME", str(home))
    for name in ("AIPO_DATABASE_URL", "AIPO_BROKER_URL", "AIPO_ARTIFACT_ROOT", "AIPO_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    if database_url is not None:
        monkeypatch.setenv("AIPO_DATABASE_URL", database_url)
    for name, value in FAST_TIMINGS.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    dispose_engines()
    settings = get_settings()
    upgrade(settings.resolved_database_url)
    return settings


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Embedded settings (SQLite + filesystem broker) under a fresh AIPO_HOME, migrated."""
    yield _migrated_store(tmp_path / "home", monkeypatch, None)
    dispose_engines()
    get_settings.cache_clear()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    """Like `store`, once on SQLite and once on a fresh PostgreSQL database (filesystem broker)."""
    url = request.getfixturevalue("fresh_postgres_url") if request.param == "postgresql" else None
    yield _migrated_store(tmp_path / "home", monkeypatch, url)
    dispose_engines()
    get_settings.cache_clear()


@pytest.fixture
def launcher(store: Settings) -> CeleryLauncher:
    return CeleryLauncher(store)


def tiny_config(iterations: int = 1, name: str = "tiny") -> RunConfig:
    return RunConfig.model_validate({"name": name, "model": "tiny-random-llama", "iterations": iterations})


def new_run(config: RunConfig | None = None) -> int:
    with session_scope() as session:
        return create_run(session, config or tiny_config()).id


def drain_wakeups(settings: Settings, queue: str = "gpu") -> list[tuple[str, int]]:
    """Consume every message waiting on `queue`: (task name, stage id) in send order."""
    app = make_celery_app(settings)
    found = []
    with app.connection_for_read() as connection:
        simple = connection.SimpleQueue(queue)
        while True:
            try:
                message = simple.get(timeout=0.2)
            except simple.Empty:
                break
            found.append((message.headers["task"], int(message.payload[0][0])))
            message.ack()
        simple.close()
    return found
