"""Backend test fixtures: real PostgreSQL/Redis (skipped when absent), SQLite, the API client.

Service fixtures skip when the service is unreachable, unless AIPO_REQUIRE_SERVICES=1 (CI),
where an unreachable service is a failure. Other test packages can reuse them with
`from tests.backend.conftest import postgres_url, redis_url  # noqa: F401`.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from backend.app import create_app
from backend.db import dispose_engines
from backend.deps import get_launcher
from backend.migrate import upgrade
from backend.settings import Settings

POSTGRES_ADMIN_URL = os.environ.get(
    "AIPO_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("AIPO_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TOKEN = "test-token-" + secrets.token_hex(8)


def _unavailable(what: str, exc: BaseException) -> None:
    if os.environ.get("AIPO_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{what} is required (AIPO_REQUIRE_SERVICES=1) but unreachable: {exc}")
    pytest.skip(f"{what} unreachable: {exc}")


def create_postgres_database() -> str:
    """CREATE DATABASE aipo_test_<random> on the test server; returns its URL."""
    admin = create_engine(
        POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    name = f"aipo_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(url: str) -> None:
    name = make_url(url).database
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test module (dropped afterwards)."""
    try:
        url = create_postgres_database()
    except Exception as exc:  # any driver/connection error means "no PostgreSQL here"
        _unavailable("PostgreSQL", exc)
    try:
        yield url
    finally:
        dispose_engines()
        drop_postgres_database(url)


@pytest.fixture
def fresh_postgres_url() -> Iterator[str]:
    """Like `postgres_url`, but a new database for this one test."""
    try:
        url = create_postgres_database()
    except Exception as exc:
        _unavailable("PostgreSQL", exc)
    try:
        yield url
    finally:
        dispose_engines()
        drop_postgres_database(url)


@pytest.fixture(scope="module")
def redis_url() -> str:
    """URL of a reachable Redis (the shared test server)."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except Exception as exc:
        _unavailable("Redis", exc)
    return REDIS_URL


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated database per module, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'aipo.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    upgrade(url)
    yield url
    dispose_engines()


@dataclass
class RecordingLauncher:
    """Test double for the broker only: remembers what would have been sent."""

    sent: list[tuple[str, int, str]] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)

    def enqueue_stage(self, stage_name: str, stage_id: int, task_id: str, queue: str | None = None) -> None:
        self.sent.append((stage_name, stage_id, task_id))

    def revoke(self, task_ids: list[str]) -> None:
        self.revoked.extend(task_ids)


@pytest.fixture
def launcher() -> RecordingLauncher:
    return RecordingLauncher()


@dataclass
class Api:
    client: TestClient
    launcher: RecordingLauncher
    settings: Settings
    home: Path

    def create_run(self, **overrides: Any) -> dict[str, Any]:
        response = self.client.post("/api/v1/runs", json=run_config(**overrides))
        assert response.status_code == 201, response.text
        return response.json()


def issue_token(api: Api, name: str | None = None, *, read_only: bool = False) -> tuple[str, str]:
    """A personal token created in the API's store, as `aipo token create` does: (name, token)."""
    from backend.db import get_sessionmaker
    from backend.store.tokens import create_token

    name = name or f"user-{uuid.uuid4().hex[:8]}"
    with get_sessionmaker(api.settings.resolved_database_url)() as session:
        _, secret = create_token(session, name, read_only=read_only)
    return name, secret


def client_with(api: Api, token: str | None) -> TestClient:
    """Another client on the same app, sending `token` (or no Authorization header)."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return TestClient(api.client.app, headers=headers)


def run_config(**overrides: Any) -> dict[str, Any]:
    """A small valid run config (JSON form)."""
    config: dict[str, Any] = {
        "name": f"test-{uuid.uuid4().hex[:8]}",
        "model": "tiny-random-llama",
        "iterations": 2,
        "objective": {"name": "aipo", "beta": 0.1, "alpha": 0.05, "lambda_": 0.2},
    }
    config.update(overrides)
    return config


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """`app` behind a real uvicorn server on 127.0.0.1:<random port>; yields its base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", limit_concurrency=200))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def make_settings(home: Path, database_url: str, **extra: Any) -> Settings:
    return Settings(home=home, database_url=database_url, api_token=TOKEN, allowed_roots=[home], **extra)


@pytest.fixture
def api(db_url: str, tmp_path: Path, launcher: RecordingLauncher) -> Iterator[Api]:
    """An authenticated TestClient on the module's database with a recording launcher."""
    settings = make_settings(tmp_path, db_url)
    app = create_app(settings)
    app.dependency_overrides[get_launcher] = lambda: launcher
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield Api(client=client, launcher=launcher, settings=settings, home=tmp_path)


@pytest.fixture
def session(db_url: str) -> Iterator[Any]:
    """A session on the module's migrated database (both backends)."""
    from backend.db import get_sessionmaker

    with get_sessionmaker(db_url)() as db_session:
        yield db_session


def small_config(**overrides: Any) -> Any:
    """A validated RunConfig for store-level tests."""
    from aipo_core.config import RunConfig

    return RunConfig.model_validate(run_config(**overrides))
