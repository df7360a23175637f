"""The reconciler against a real SQLite store and filesystem broker."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from backend.db import session_scope
from backend.settings import Settings
from backend.store.models import Run, Stage, utcnow
from backend.store.runs import launch_run
from backend.store.stages import claim_stage
from backend.store.sweeps import create_sweep
from worker.options import WorkerOptions
from worker.reconciler import reconcile_once

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
