"""The reconciler against a real store (SQLite and PostgreSQL) and the filesystem broker."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import text, update

from backend.db import get_sessionmaker, session_scope
from backend.launcher import CeleryLauncher
from backend.lifecycle import launch_run
from backend.settings import Settings
from backend.store.models import Run, Stage, utcnow
from backend.store.stages import claim_stage, heartbeat
from backend.store.sweeps import create_sweep
from worker.options import WorkerOptions
from worker.reconciler import ReconcileReport, reconcile_once, reconcile_stage, stale_snapshot

from .conftest import drain_wakeups, new_run, tiny_config

OPTIONS = WorkerOptions(heartbeat_timeout_s=30, queued_timeout_s=30, max_attempts=2)


def _claimed_stage(settings: Settings, launcher, *, age_s: float) -> int:
    """A running stage whose last heartbeat is `age_s` seconds old."""
    run_id = new_run()
    with session_scope() as session:
        stage_id = launch_run(session, run_id, launcher).id
    drain_wakeups(settings)
    with session_scope() as session:
        claim_stage(session, stage_id)
        session.execute(
            update(Stage).where(Stage.id == stage_id).values(heartbeat_at=utcnow() - timedelta(seconds=age_s))
        )
    return stage_id


def _stage(stage_id: int) -> Stage:
    with session_scope() as session:
        return session.get(Stage, stage_id)


def test_fresh_stages_are_left_alone(store: Settings, launcher) -> None:
    _claimed_stage(store, launcher, age_s=1)
    assert reconcile_once(OPTIONS, launcher).requeued == []
    assert drain_wakeups(store) == []


def test_expired_heartbeat_is_requeued_then_failed_after_the_budget(store: Settings, launcher) -> None:
    stage_id = _claimed_stage(store, launcher, age_s=60)
    report = reconcile_once(OPTIONS, launcher)
    assert report.requeued == [stage_id] and report.failed == []
    assert _stage(stage_id).status == "queued"
    assert drain_wakeups(store) == [("aipo.stage.self_instruct", stage_id)]
    # The second attempt's worker dies too: attempt 2 of 2 is the last.
    with session_scope() as session:
        claim_stage(session, stage_id)
        session.execute(
            update(Stage).where(Stage.id == stage_id).values(heartbeat_at=utcnow() - timedelta(seconds=60))
        )
    report = reconcile_once(OPTIONS, launcher)
    assert report.failed == [stage_id]
    stage = _stage(stage_id)
    assert stage.status == "failed" and "worker lost" in stage.error and "after 2 attempts" in stage.error
    with session_scope() as session:
        run = session.get(Run, stage.run_id)
        assert run.status == "failed" and "worker lost" in run.error


def test_lost_wakeup_of_a_queued_stage_is_resent(store: Settings, launcher) -> None:
    run_id = new_run()
    with session_scope() as session:
        stage_id = launch_run(session, run_id, launcher).id
    drain_wakeups(store)  # the broker lost it
    assert reconcile_once(OPTIONS, launcher).requeued == []
    with session_scope() as session:
        session.execute(
            update(Stage).where(Stage.id == stage_id).values(queued_at=utcnow() - timedelta(seconds=60))
        )
    assert reconcile_once(OPTIONS, launcher).requeued == [stage_id]
    assert drain_wakeups(store) == [("aipo.stage.self_instruct", stage_id)]
    assert reconcile_once(OPTIONS, launcher).requeued == []  # queued_at was refreshed


def test_waiting_sweep_runs_are_launched_up_to_the_bound(store: Settings, launcher) -> None:
    with session_scope() as session:
        sweep = create_sweep(session, "grid", tiny_config(), {"seed": [1, 2, 3]}, max_concurrent=2)
        sweep_id = sweep.id
    report = reconcile_once(OPTIONS, launcher)
    assert len(report.launched_runs) == 2
    assert len(drain_wakeups(store)) == 2
    assert reconcile_once(OPTIONS, launcher).launched_runs == []
    with session_scope() as session:
        waiting = session.query(Run).filter(Run.sweep_id == sweep_id, Run.launched_at.is_(None)).count()
    assert waiting == 1


def _age(stage_id: int, **columns_age_s: float) -> None:
    """Set timestamp columns (heartbeat_at, queued_at) to that many seconds ago."""
    with session_scope() as session:
        values = {name: utcnow() - timedelta(seconds=age) for name, age in columns_age_s.items()}
        session.execute(update(Stage).where(Stage.id == stage_id).values(**values))


def _queued_stage(settings: Settings, launcher, *, age_s: float) -> int:
    """A queued stage whose wake-up was sent `age_s` seconds ago (and is nowhere any more)."""
    run_id = new_run()
    with session_scope() as session:
        stage_id = launch_run(session, run_id, launcher).id
    drain_wakeups(settings)
    _age(stage_id, queued_at=age_s)
    return stage_id


def _state(stage_id: int) -> tuple[str, int]:
    stage = _stage(stage_id)
    return stage.status, stage.attempt


# The reconciler race: its pass snapshots the stale stages, then acts on each in a later
# transaction. These tests put the competing step exactly between the two (on both backends).


def test_a_queued_stage_claimed_after_the_snapshot_is_not_taken_back(any_store: Settings) -> None:
    """A stage queued behind a long job is claimed just as the reconciler looks at it."""
    launcher = CeleryLauncher(any_store)
    stage_id = _queued_stage(any_store, launcher, age_s=60)
    (snapshot,) = stale_snapshot(OPTIONS)
    assert (snapshot.stage_id, snapshot.status, snapshot.attempt) == (stage_id, "queued", 0)
    with session_scope() as session:
        assert claim_stage(session, stage_id).attempt == 1  # the worker that was busy gets to it
    report = ReconcileReport()
    reconcile_stage(snapshot, OPTIONS, launcher, report)
    assert report == ReconcileReport()
    assert _state(stage_id) == ("running", 1)
    with session_scope() as session:
        assert heartbeat(session, stage_id, attempt=1), "the healthy attempt must keep its claim"
    assert drain_wakeups(any_store) == []


def test_a_stale_stage_reclaimed_after_the_snapshot_keeps_its_new_attempt(any_store: Settings) -> None:
    launcher = CeleryLauncher(any_store)
    stage_id = _claimed_stage(any_store, launcher, age_s=60)
    (snapshot,) = stale_snapshot(OPTIONS)
    assert (snapshot.status, snapshot.attempt) == ("running", 1)
    with session_scope() as session:  # another worker's wake-up took over the stale stage
        assert claim_stage(session, stage_id, stale_after_s=OPTIONS.heartbeat_timeout_s).attempt == 2
    report = ReconcileReport()
    reconcile_stage(snapshot, OPTIONS, launcher, report)
    assert report == ReconcileReport() and _state(stage_id) == ("running", 2)
    with session_scope() as session:
        assert heartbeat(session, stage_id, attempt=2)
    assert drain_wakeups(any_store) == []


def test_a_late_heartbeat_after_the_snapshot_saves_the_same_attempt(any_store: Settings) -> None:
    """Same attempt, but no longer stale: neither requeued nor (past the budget) failed."""
    launcher = CeleryLauncher(any_store)
    stage_id = _claimed_stage(any_store, launcher, age_s=60)
    (snapshot,) = stale_snapshot(OPTIONS)
    with session_scope() as session:
        assert heartbeat(session, stage_id, attempt=1)  # the slow worker was alive after all
    for options in (OPTIONS, WorkerOptions(heartbeat_timeout_s=30, queued_timeout_s=30, max_attempts=1)):
        report = ReconcileReport()
        reconcile_stage(snapshot, options, launcher, report)
        assert report == ReconcileReport() and _state(stage_id) == ("running", 1)
    assert drain_wakeups(any_store) == []


def test_a_queued_stage_requeued_by_another_reconciler_is_not_sent_twice(any_store: Settings) -> None:
    launcher = CeleryLauncher(any_store)
    stage_id = _queued_stage(any_store, launcher, age_s=60)
    first, second = stale_snapshot(OPTIONS), stale_snapshot(OPTIONS)  # two workers' passes
    for snapshot, expected in ((first, [stage_id]), (second, [])):
        report = ReconcileReport()
        reconcile_stage(snapshot[0], OPTIONS, launcher, report)
        assert report.requeued == expected
    assert drain_wakeups(any_store) == [("aipo.stage.self_instruct", stage_id)]


def test_still_stale_snapshot_stages_are_requeued_and_failed(any_store: Settings) -> None:
    """The fence lets the pass do its job when nothing moved."""
    launcher = CeleryLauncher(any_store)
    stage_id = _claimed_stage(any_store, launcher, age_s=60)
    (snapshot,) = stale_snapshot(OPTIONS)
    report = ReconcileReport()
    reconcile_stage(snapshot, OPTIONS, launcher, report)
    assert report.requeued == [stage_id] and _state(stage_id) == ("queued", 1)
    with session_scope() as session:
        claim_stage(session, stage_id)
    _age(stage_id, heartbeat_at=60)
    (snapshot,) = stale_snapshot(OPTIONS)
    reconcile_stage(snapshot, OPTIONS, launcher, report)
    assert report.failed == [stage_id] and _state(stage_id) == ("failed", 2)


def _wait_for_lock_waiter(database: str, timeout_s: float = 30.0) -> None:
    """Until a backend of `database` waits for a row lock (PostgreSQL's own view of it)."""
    deadline = time.monotonic() + timeout_s
    with session_scope() as session:
        session.execute(text("SELECT 1"))
    while time.monotonic() < deadline:
        with session_scope() as session:
            waiting = session.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = :db AND wait_event_type = 'Lock'"
                ),
                {"db": database},
            )
        if waiting:
            return
        time.sleep(0.05)
    raise AssertionError("the reconciler never waited for the claim's row lock")


@pytest.mark.parametrize("any_store", ["postgresql"], indirect=True)
def test_requeue_waiting_on_a_concurrent_claim_rechecks_the_new_row(any_store: Settings) -> None:
    """PostgreSQL: the claim's transaction holds the row while the reconciler's fenced requeue
    waits for it; once the claim commits, the guard is re-evaluated on the claimed row (SQLite
    serialises whole transactions, so the sequential interleavings above cover it)."""
    launcher = CeleryLauncher(any_store)
    stage_id = _queued_stage(any_store, launcher, age_s=60)
    (snapshot,) = stale_snapshot(OPTIONS)
    report = ReconcileReport()
    claimer = get_sessionmaker()()
    try:
        assert claim_stage(claimer, stage_id).attempt == 1  # not committed: the row stays locked
        reconciler = threading.Thread(target=reconcile_stage, args=(snapshot, OPTIONS, launcher, report))
        reconciler.start()
        _wait_for_lock_waiter(any_store.resolved_database_url.rsplit("/", 1)[1])
        claimer.commit()
        reconciler.join(timeout=30)
        assert not reconciler.is_alive()
    finally:
        claimer.close()
    assert report == ReconcileReport() and _state(stage_id) == ("running", 1)
    assert drain_wakeups(any_store) == []
