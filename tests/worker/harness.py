"""Real deployments for the reliability tests: databases, brokers, the stack, HTTP helpers.

Every test gets its own AIPO_HOME and its own database (a fresh PostgreSQL database, or SQLite
under AIPO_HOME); services tests use Redis database REDIS_DB (env AIPO_TEST_REDIS_DB, default 13)
of the shared server, flushed before and after. A test that restarts Redis starts a private
`redis-server` of its own on a free port and restarts that one: the shared servers are never
stopped. All processes are started in their own sessions and killed in teardown.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from aipo_cli.services import Stack, spawn, start_stack, worker_command
from backend.db import dispose_engines
from backend.migrate import upgrade
from backend.settings import get_settings

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_PORT = 6379
REDIS_DB = int(os.environ.get("AIPO_TEST_REDIS_DB", "13"))  # ours alone: other suites use Redis too

#: Fast supervision so that a dead worker is noticed in seconds, not minutes. The lease (see
#: worker.lease) is 8 - 1 - 2 × 0.5 = 6 s: a loaded machine's slow heartbeats must not stop stages.
FAST_TIMINGS = {
    "AIPO_STAGE_HEARTBEAT_INTERVAL_S": "0.5",
    "AIPO_STAGE_HEARTBEAT_TIMEOUT_S": "8",
    "AIPO_STAGE_QUEUED_TIMEOUT_S": "5",
    "AIPO_RECONCILE_INTERVAL_S": "1",
    "AIPO_STAGE_KILL_GRACE_S": "1",
}

#: A run that takes seconds per stage on two CPU cores.
TINY_RUN: dict[str, Any] = {
    "name": "tiny-reliability",
    "model": "tiny-random-llama",
    "iterations": 1,
    # One self-instruct call per instruction; the tiny model's text is mostly filtered out and
    # the pool tops the list up, which is what keeps this stage fast.
    "self_instruct": {
        "num_instructions": 4,
        "num_seed_examples": 2,
        "max_new_tokens": 8,
        "batch_size": 4,
        "max_attempts_factor": 1,
    },
    # Random weights almost never emit EOS: keep the cut-off candidates, or no pair survives.
    "generation": {"num_candidates": 2, "max_new_tokens": 8, "batch_size": 4, "keep_unfinished": True},
    "ranker": {"kind": "llm_judge", "model": "policy"},
    "training": {"batch_size": 2, "max_steps": 2, "max_prompt_length": 256, "max_length": 320},
    "evaluation": {"benchmarks": ["alpaca_eval"], "limit": 2, "max_new_tokens": 8},
}

TERMINAL = ("succeeded", "failed", "cancelled")


def services_required() -> bool:
    return os.environ.get("AIPO_REQUIRE_SERVICES") == "1"


def skip_or_fail(reason: str) -> None:
    if services_required():
        pytest.fail(f"{reason} (AIPO_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database; dropped afterwards. Yields its SQLAlchemy URL."""
    import psycopg

    name = f"aipo_worker_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        skip_or_fail(f"PostgreSQL unreachable: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        yield url
    finally:
        dispose_engines()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def redis_database() -> Iterator[str]:
    """Our Redis database number, empty before and after. Yields the broker URL."""
    import redis

    client = redis.Redis(port=REDIS_PORT, db=REDIS_DB, socket_connect_timeout=3)
    try:
        client.flushdb()
    except redis.RedisError as exc:
        skip_or_fail(f"Redis unreachable: {exc}")
    try:
        yield f"redis://127.0.0.1:{REDIS_PORT}/{REDIS_DB}"
    finally:
        try:
            client.flushdb()
        except redis.RedisError:
            pass


class PrivateRedis:
    """A `redis-server` of this test's own (same binary, no persistence) on a free port."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(self.folder), "--logfile", str(self.folder / "redis.log"),
        ]  # fmt: skip
        try:
            self.process = subprocess.Popen(command, start_new_session=True)
        except FileNotFoundError as exc:
            skip_or_fail(f"redis-server not installed: {exc}")
        deadline = time.monotonic() + 15
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"private redis-server did not start; see {self.folder / 'redis.log'}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Shut down without saving: every queued message is lost, as in a crash."""
        if self.process is None:
            return
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown", "nosave"], check=False, timeout=10)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self, down_s: float = 2.0) -> None:
        before = self._run_id()
        self.stop()
        time.sleep(down_s)
        self.start()
        assert self._run_id() != before, "Redis did not restart"

    def _run_id(self) -> str:
        import redis

        return str(redis.Redis(port=self.port, socket_connect_timeout=3).info("server")["run_id"])

    def _answers(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=1).ping())
        except redis.RedisError:
            return False


@contextmanager
def private_redis(folder: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Deployment:
    """One running deployment: the environment every process shares, and the stack."""

    env: dict[str, str]
    stack: Stack
    extra_workers: list[Any] = field(default_factory=list)

    @property
    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=f"{self.stack.api_url}/api/v1",
            headers={"Authorization": f"Bearer {self.stack.token}"},
            timeout=30.0,
        )

    def start_worker(self, name: str, **env: str) -> Any:
        """Another real worker process (e.g. after killing the first), `env` overriding variables."""
        service = spawn(
            name, worker_command(name=name), logs=self.stack.home / "logs", env={**self.env, **env}
        )
        self.stack.services.append(service)
        return service


@contextmanager
def deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, database_url: str | None = None,
               broker_url: str | None = None) -> Iterator[Deployment]:  # fmt: skip
    """API + one worker against the given stores (default: embedded SQLite + filesystem broker).

    The test process's own settings point at the same stores so it can inspect the database.
    """
    env = {"AIPO_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", **FAST_TIMINGS}
    if database_url:
        env["AIPO_DATABASE_URL"] = database_url
    if broker_url:
        env["AIPO_BROKER_URL"] = broker_url
    for name in ("AIPO_DATABASE_URL", "AIPO_BROKER_URL", "AIPO_ARTIFACT_ROOT", "AIPO_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    dispose_engines()
    if database_url:
        upgrade(database_url)
    stack = start_stack(api_port=free_port(), dashboard_port=None, env=env)
    try:
        yield Deployment(env={**os.environ, **env, "AIPO_API_TOKEN": stack.token}, stack=stack)
    finally:
        stack.stop(grace_s=3.0)
        dispose_engines()
        get_settings.cache_clear()


def submit(dep: Deployment, config: dict[str, Any]) -> int:
    with dep.client as client:
        response = client.post("/runs", json=config)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def get_run(dep: Deployment, run_id: int) -> dict[str, Any]:
    with dep.client as client:
        response = client.get(f"/runs/{run_id}")
    response.raise_for_status()
    return response.json()


def wait_until(
    predicate: Callable[[], Any], *, timeout_s: float, what: str, dep: Deployment | None = None
) -> Any:
    """Poll `predicate` until truthy; on timeout, fail with the service logs' tails."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}\n{_logs(dep)}")
        time.sleep(0.2)


def wait_for_status(
    dep: Deployment, run_id: int, statuses: tuple[str, ...], timeout_s: float
) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        run = get_run(dep, run_id)
        return run if run["status"] in statuses else None

    return wait_until(reached, timeout_s=timeout_s, what=f"run {run_id} to be {'/'.join(statuses)}", dep=dep)


class DeathWatch(threading.Thread):
    """Records (wall clock) when the last live process of a process group is gone."""

    def __init__(self, pgid: int) -> None:
        super().__init__(daemon=True)
        self.pgid = pgid
        self.died_at: float | None = None

    def run(self) -> None:
        from worker.stage_process import group_alive

        while group_alive(self.pgid):
            time.sleep(0.01)
        self.died_at = time.time()


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _logs(dep: Deployment | None) -> str:
    if dep is None:
        return ""
    parts = []
    for log in sorted((dep.stack.home / "logs").glob("*.log")) + sorted(
        dep.stack.home.glob("runs/*/logs/*.log")
    ):
        text = log.read_text(errors="replace")
        parts.append(f"--- {log} (tail)\n{text[-3000:]}")
    return "\n".join(parts)
