"""A database cut-off longer than the heartbeat timeout leaves exactly one attempt running.

Worker A (its own process, `outage_worker`) reaches PostgreSQL through a TCP proxy; worker B (this
process) reaches it directly and tries to claim the stage every 0.1 s, the most eager competitor
there can be. The proxy is cut while A's stage child runs: A can no longer heartbeat, B takes
the stage over once A's stored heartbeat is older than the timeout. The stage body holds an
exclusive file lock for as long as its process lives, so a second child starting while the first
is alive is recorded, not merely unlikely to be seen. The shared PostgreSQL is never stopped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from aipo_core import artifacts
from backend.db import session_scope
from backend.launcher import CeleryLauncher
from backend.lifecycle import launch_run
from backend.store.metrics import metric_history
from backend.store.models import Metric, Stage
from backend.store.stages import get_stage
from worker.execution import execute_stage
from worker.options import WorkerOptions

from .conftest import FAST_TIMINGS, _migrated_store, drain_wakeups, new_run
from .harness import DeathWatch
from .tcp_proxy import TcpProxy

ENTRY = "tests.worker.stage_bodies:exclusive"
REPO = Path(__file__).resolve().parents[2]


def _wait(predicate, *, timeout_s: float, what: str, log: Path | None = None):
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}\n{tail}")
        time.sleep(0.02)
    return value


def _starts(root: Path) -> list[tuple[int, float]]:
    path = root / "attempts.log"
    if not path.exists():
        return []
    return [(int(pid), float(at)) for pid, at in (line.split() for line in path.read_text().splitlines())]


@pytest.mark.services
def test_database_cut_off_longer_than_the_heartbeat_timeout_leaves_one_attempt_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_postgres_url: str
) -> None:
    settings = _migrated_store(tmp_path / "home", monkeypatch, fresh_postgres_url)
    options = WorkerOptions.from_settings(settings)
    root = settings.resolved_artifact_root
    launcher = CeleryLauncher(settings)
    run_id = new_run()
    with session_scope() as session:
        stage_id = launch_run(session, run_id, launcher).id
    drain_wakeups(settings)
    proxy = TcpProxy(
        (make_url(fresh_postgres_url).host or "127.0.0.1", make_url(fresh_postgres_url).port or 5432)
    )
    proxied = make_url(fresh_postgres_url).set(host="127.0.0.1", port=proxy.port)
    log = tmp_path / "worker-a.log"
    env = {
        **os.environ,
        **FAST_TIMINGS,
        "AIPO_HOME": str(settings.home),
        "AIPO_DATABASE_URL": proxied.render_as_string(hide_password=False),
    }
    with open(log, "w") as out:
        worker_a = subprocess.Popen(
            [sys.executable, "-m", "tests.worker.outage_worker", str(stage_id), "self_instruct", ENTRY],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=out, text=True, start_new_session=True,
        )  # fmt: skip
    outcomes_b: list[str] = []
    try:
        ((a_pid, a_started),) = _wait(lambda: _starts(root), timeout_s=120, what="A's stage child", log=log)
        _wait(lambda: _stage(stage_id).pid == a_pid, timeout_s=30, what="A's pid in the store", log=log)
        _wait(lambda: _ticks(run_id).get(1, 0) >= 3, timeout_s=30, what="A's metrics in the store", log=log)
        watch = DeathWatch(a_pid)
        watch.start()
        proxy.cut()
        cut_at = time.time()

        def worker_b() -> None:
            while True:
                outcome = execute_stage(
                    stage_id, expected_stage="self_instruct", task_id="b", settings=settings,
                    launcher=launcher, entry=ENTRY,
                )  # fmt: skip
                if outcome != "skipped":
                    outcomes_b.append(outcome)
                    return
                time.sleep(0.1)

        b = threading.Thread(target=worker_b, daemon=True)
        b.start()
        overlaps = root / "overlaps"
        _wait(lambda: len(_starts(root)) == 2 or overlaps.exists(), timeout_s=60, what="B's child", log=log)
        assert not overlaps.exists(), "B's child started while A's was still alive"
        b_pid, b_started = _starts(root)[1]
        a_out, _ = worker_a.communicate(timeout=60)
        a_result = json.loads(a_out.splitlines()[-1])
        watch.join(timeout=10)
        proxy.restore()
        (root / "release").touch()
        b.join(timeout=60)
    finally:
        proxy.close()
        if worker_a.poll() is None:
            os.killpg(worker_a.pid, 9)
            worker_a.wait()

    assert not overlaps.exists(), "a second attempt started while the first was alive"
    assert a_result["outcome"] == "lost", log.read_text()[-4000:]
    assert outcomes_b == ["succeeded"]
    stage = _stage(stage_id)
    assert (stage.status, stage.attempt) == ("succeeded", 2)
    b_claimed = stage.started_at.timestamp()  # attempt 2's claim: from then on B may run
    assert watch.died_at is not None and watch.died_at < b_claimed < b_started
    published = artifacts.iteration_dir(root, str(run_id), 0)
    assert json.loads((published / "output.json").read_text()) == {"pid": b_pid}
    assert not (published / artifacts.ATTEMPTS_DIR).exists()
    by_attempt = _ticks(run_id)
    assert set(by_attempt) == {1, 2}, "A's curve is kept, under its own attempt"
    with session_scope() as session:
        _, history = metric_history(session, run_id, "ticks")
    assert {p["attempt"] for p in history} == {2} and {p["value"] for p in history} == {float(b_pid)}
    # The figures for the README's fault table.
    print(
        f"\nlease {options.lease_s:g} s, heartbeat timeout {options.heartbeat_timeout_s:g} s: "
        f"A's child stopped {watch.died_at - cut_at:.2f} s after the cut, B claimed the stage "
        f"{b_claimed - cut_at:.2f} s and started its child {b_started - cut_at:.2f} s after it; "
        f"A ran {cut_at - a_started:.1f} s before the cut"
    )


def _stage(stage_id: int) -> Stage:
    with session_scope() as session:
        stage = get_stage(session, stage_id)
        assert stage is not None
        return stage


def _ticks(run_id: int) -> dict[int, int]:
    """Stored points of the body's `ticks` metric, per attempt."""
    with session_scope() as session:
        rows = session.execute(
            select(Metric.attempt, func.count())
            .where(Metric.run_id == run_id, Metric.key == "ticks")
            .group_by(Metric.attempt)
        ).all()
    return {attempt: count for attempt, count in rows}
