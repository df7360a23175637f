"""The stage state machine the worker drives. Every transition is one guarded UPDATE.

    pending ─queue─▶ queued ─claim─▶ running ─complete─▶ succeeded
                       ▲               │ ├─fail────▶ failed (the run fails too)
                       └──requeue/retry┘ └─skip────▶ skipped
    any unfinished ─cancel (backend.lifecycle)─▶ cancelled

A guard that does not match returns None/False instead of raising: a duplicate Celery delivery
or a stale worker simply finds nothing to do. `attempt` is a fencing token: a worker that was
presumed dead and replaced (attempt moved on) gets False from `heartbeat` and stops its child.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import ColumnElement, and_, exists, or_, select, update
from sqlalchemy.orm import Session

from backend.launcher import Launcher
from backend.store.launching import commit_and_send, mark_queued
from backend.store.models import RUN_ACTIVE, STAGE_DONE, Iteration, Run, Stage, execute_update, utcnow


def stage_log_path(artifact_root: Path | str, run_id: int, iteration: int, stage_name: str) -> Path:
    """Where the worker writes a stage's log and the API reads it from."""
    return Path(artifact_root) / "runs" / str(run_id) / "logs" / f"iter_{iteration}_{stage_name}.log"


def get_stage(session: Session, stage_id: int) -> Stage | None:
    return session.get(Stage, stage_id)


def list_stages(session: Session, run_id: int, iteration: int | None = None) -> list[Stage]:
    """A run's stages in execution order."""
    query = select(Stage).where(Stage.run_id == run_id)
    if iteration is not None:
        query = query.where(Stage.iteration == iteration)
    return list(session.scalars(query.order_by(Stage.position)).all())


def _run_is_active() -> ColumnElement[bool]:
    return exists().where(Run.id == Stage.run_id, Run.status.in_(RUN_ACTIVE))


def _fenced(stage_id: int, attempt: int | None) -> list[ColumnElement[bool]]:
    conditions = [Stage.id == stage_id]
    if attempt is not None:
        conditions.append(Stage.attempt == attempt)
    return conditions


def _refresh(session: Session, stage_id: int) -> Stage:
    """Reload a stage after a guarded UPDATE matched it (the row exists)."""
    stage = session.get(Stage, stage_id, populate_existing=True)
    if stage is None:
        raise LookupError(f"stage {stage_id} vanished inside its own transaction")
    return stage


def claim_stage(
    session: Session,
    stage_id: int,
    *,
    task_id: str | None = None,
    log_path: str | None = None,
    stale_after_s: float | None = None,
) -> Stage | None:
    """Take a stage to run: queued/pending (or running with a heartbeat older than `stale_after_s`).

    Increments `attempt`, stamps the heartbeat, marks the run running. Returns the stage, or None
    when the stage is done, freshly running elsewhere, or its run is no longer active.
    """
    now = utcnow()
    claimable = Stage.status.in_(("pending", "queued"))
    if stale_after_s is not None:
        cutoff = now - timedelta(seconds=stale_after_s)
        claimable = or_(claimable, and_(Stage.status == "running", Stage.heartbeat_at < cutoff))
    values: dict[str, object] = {
        "status": "running",
        "attempt": Stage.attempt + 1,
        "heartbeat_at": now,
        "started_at": now,
        "finished_at": None,
        "progress": 0.0,
        "pid": None,
    }
    if task_id is not None:
        values["task_id"] = task_id
    if log_path is not None:
        values["log_path"] = log_path
    claimed = update(Stage).where(Stage.id == stage_id, claimable, _run_is_active()).values(**values)
    if execute_update(session, claimed) != 1:
        return None
    stage = _refresh(session, stage_id)
    execute_update(
        session,
        update(Run)
        .where(Run.id == stage.run_id, Run.status == "queued")
        .values(status="running", started_at=now, updated_at=now),
        (Run, {"id": stage.run_id}),
    )
    execute_update(
        session,
        update(Iteration)
        .where(Iteration.id == stage.iteration_id, Iteration.started_at.is_(None))
        .values(started_at=now),
        (Iteration, {"id": stage.iteration_id}),
    )
    return stage


def heartbeat(
    session: Session,
    stage_id: int,
    *,
    progress: float | None = None,
    message: str | None = None,
    pid: int | None = None,
    attempt: int | None = None,
) -> bool:
    """Record liveness (and optionally progress 0–1, a message, the child's pid).

    False means "stop": the stage is no longer running (cancelled, failed, taken over) or its run
    was cancelled — the caller kills the stage's process group.
    """
    values: dict[str, object] = {"heartbeat_at": utcnow()}
    if progress is not None:
        values["progress"] = min(1.0, max(0.0, float(progress)))
    if message is not None:
        values["message"] = message
    if pid is not None:
        values["pid"] = pid
    beat = (
        update(Stage)
        .where(*_fenced(stage_id, attempt), Stage.status == "running", _run_is_active())
        .values(**values)
    )
    return execute_update(session, beat, (Stage, {"id": stage_id})) == 1


def _after_done(session: Session, stage: Stage) -> None:
    """Close the iteration and the run when `stage` was their last open stage."""
    now = utcnow()
    open_in_iteration = session.scalar(
        select(exists().where(Stage.iteration_id == stage.iteration_id, Stage.status.not_in(STAGE_DONE)))
    )
    if not open_in_iteration:
        execute_update(
            session,
            update(Iteration).where(Iteration.id == stage.iteration_id).values(finished_at=now),
            (Iteration, {"id": stage.iteration_id}),
        )
    open_in_run = session.scalar(
        select(exists().where(Stage.run_id == stage.run_id, Stage.status.not_in(STAGE_DONE)))
    )
    if not open_in_run:
        execute_update(
            session,
            update(Run)
            .where(Run.id == stage.run_id, Run.status.in_(RUN_ACTIVE))
            .values(status="succeeded", finished_at=now, updated_at=now),
            (Run, {"id": stage.run_id}),
        )


def complete_stage(
    session: Session,
    stage_id: int,
    *,
    artifact_path: str | None = None,
    attempt: int | None = None,
    placement: dict[str, object] | None = None,
) -> Stage | None:
    """running → succeeded (progress 1), recording the `placement` its model ran on. Marks the run
    succeeded after its last stage."""
    now = utcnow()
    values: dict[str, object] = {
        "status": "succeeded",
        "progress": 1.0,
        "message": "done",  # not the last in-flight progress line ("train step 2/3")
        "finished_at": now,
        "heartbeat_at": now,
    }
    if artifact_path is not None:
        values["artifact_path"] = artifact_path
    if placement is not None:
        values["placement"] = placement
    completed = update(Stage).where(*_fenced(stage_id, attempt), Stage.status == "running").values(**values)
    if execute_update(session, completed) != 1:
        return None
    stage = _refresh(session, stage_id)
    _after_done(session, stage)
    return stage


def skip_stage(session: Session, stage_id: int, *, reason: str, attempt: int | None = None) -> Stage | None:
    """pending/queued/running → skipped (counts as done; e.g. sampling when initial_pairs is set).

    With `attempt`, only while that attempt still holds the running stage (as `complete_stage`).
    """
    now = utcnow()
    statuses = ("running",) if attempt is not None else ("pending", "queued", "running")
    skipped = (
        update(Stage)
        .where(*_fenced(stage_id, attempt), Stage.status.in_(statuses))
        .values(status="skipped", message=reason, progress=1.0, finished_at=now)
    )
    if execute_update(session, skipped) != 1:
        return None
    stage = _refresh(session, stage_id)
    _after_done(session, stage)
    return stage


def fail_stage(
    session: Session,
    stage_id: int,
    error: str,
    *,
    attempt: int | None = None,
    only_if: ColumnElement[bool] | None = None,
) -> Stage | None:
    """running/queued/pending → failed with `error`; the run fails with the same error."""
    now = utcnow()
    guards = [*_fenced(stage_id, attempt), Stage.status.in_(("pending", "queued", "running"))]
    if only_if is not None:
        guards.append(only_if)
    failed = update(Stage).where(*guards).values(status="failed", error=error, finished_at=now)
    if execute_update(session, failed) != 1:
        return None
    stage = _refresh(session, stage_id)
    execute_update(
        session,
        update(Run)
        .where(Run.id == stage.run_id, Run.status.in_(RUN_ACTIVE))
        .values(
            status="failed",
            error=f"stage {stage.name} (iteration {stage.iteration}) failed: {error}",
            finished_at=now,
            updated_at=now,
        ),
        (Run, {"id": stage.run_id}),
    )
    return stage


def next_stage(session: Session, stage_id: int) -> Stage | None:
    """The first stage after `stage_id` (by position) that is not done; None after the last."""
    stage = session.get(Stage, stage_id)
    if stage is None:
        return None
    return session.scalars(
        select(Stage)
        .where(Stage.run_id == stage.run_id, Stage.position > stage.position, Stage.status.not_in(STAGE_DONE))
        .order_by(Stage.position)
        .limit(1)
    ).first()


def _queue_if(
    session: Session, stage_id: int, guard: ColumnElement[bool], launcher: Launcher, **extra: object
) -> Stage | None:
    stage = session.scalars(
        select(Stage).where(Stage.id == stage_id, guard, _run_is_active()).with_for_update()
    ).first()
    if stage is None:
        return None
    mark_queued(stage)
    for name, value in extra.items():
        setattr(stage, name, value)
    commit_and_send(session, [stage], launcher)
    return stage


def queue_stage(session: Session, stage_id: int, launcher: Launcher) -> Stage | None:
    """pending → queued with a new task id; COMMITS, then enqueues. None if not pending/run inactive."""
    return _queue_if(session, stage_id, Stage.status == "pending", launcher)


def requeue_stage(session: Session, stage_id: int, launcher: Launcher) -> Stage | None:
    """queued/running → queued again (new task id, fresh `queued_at`); COMMITS, then enqueues.

    For the reconciler (stale heartbeat, lost wake-up) and after a crashed child.
    """
    return _queue_if(session, stage_id, Stage.status.in_(("queued", "running")), launcher, pid=None)


def retry_stage(
    session: Session, stage_id: int, launcher: Launcher, *, error: str, attempt: int | None = None
) -> Stage | None:
    """running → queued, keeping `error` as the last failure; COMMITS, then enqueues."""
    guard = and_(*_fenced(stage_id, attempt), Stage.status == "running")
    return _queue_if(session, stage_id, guard, launcher, error=error, pid=None)


def _stale(*, heartbeat_timeout_s: float, queued_timeout_s: float | None = None) -> ColumnElement[bool]:
    """Running with an old (or no) heartbeat; or, with `queued_timeout_s`, queued unclaimed that long."""
    now = utcnow()
    conditions = [
        and_(
            Stage.status == "running",
            or_(
                Stage.heartbeat_at < now - timedelta(seconds=heartbeat_timeout_s),
                Stage.heartbeat_at.is_(None),
            ),
        )
    ]
    if queued_timeout_s is not None:
        conditions.append(
            and_(Stage.status == "queued", Stage.queued_at < now - timedelta(seconds=queued_timeout_s))
        )
    return or_(*conditions)


def stale_stages(
    session: Session, *, heartbeat_timeout_s: float, queued_timeout_s: float | None = None
) -> list[Stage]:
    """Stages of active runs that need the reconciler: running with an old (or no) heartbeat,
    and, when `queued_timeout_s` is given, queued but unclaimed for that long."""
    stale = _stale(heartbeat_timeout_s=heartbeat_timeout_s, queued_timeout_s=queued_timeout_s)
    query = select(Stage).where(stale, _run_is_active()).order_by(Stage.id)
    return list(session.scalars(query).all())


def requeue_stale_stage(
    session: Session,
    stage_id: int,
    launcher: Launcher,
    *,
    attempt: int,
    heartbeat_timeout_s: float,
    queued_timeout_s: float | None = None,
) -> Stage | None:
    """`requeue_stage` for the reconciler: only if the stage is STILL stale and still at `attempt`.

    The reconciler decides from a snapshot (`stale_stages`); by the time it acts, a worker may
    have claimed the stage (attempt moved on, heartbeat fresh) or the late worker may have beaten
    again. Requeueing then would take the stage from a healthy attempt and get its child killed,
    so the guard re-checks both inside the locking SELECT (PostgreSQL re-evaluates it on the
    newest row version after waiting for a concurrent claim's lock). COMMITS, then enqueues.
    """
    guard = and_(
        Stage.attempt == attempt,
        _stale(heartbeat_timeout_s=heartbeat_timeout_s, queued_timeout_s=queued_timeout_s),
    )
    return _queue_if(session, stage_id, guard, launcher, pid=None)


def fail_stale_stage(
    session: Session, stage_id: int, error: str, *, attempt: int, heartbeat_timeout_s: float
) -> Stage | None:
    """`fail_stage` for the reconciler: only a stage still running at `attempt` with an expired heartbeat."""
    return fail_stage(
        session,
        stage_id,
        error,
        attempt=attempt,
        only_if=_stale(heartbeat_timeout_s=heartbeat_timeout_s),
    )
