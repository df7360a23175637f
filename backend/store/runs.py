"""Runs: create (with every stage planned up front), list, and the row changes behind launch,
cancel and resume; `backend.lifecycle` commits those and sends the wake-ups."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from aipo_core.config import RunConfig
from backend.routing import STAGES, queue_for
from backend.store.errors import ConflictError, NotFoundError
from backend.store.launching import mark_queued
from backend.store.models import (
    RUN_ACTIVE,
    RUN_FINISHED,
    STAGE_DONE,
    Iteration,
    Run,
    Stage,
    execute_update,
    utcnow,
)


def create_run(
    session: Session,
    config: RunConfig,
    *,
    sweep_id: int | None = None,
    sweep_point: dict[str, Any] | None = None,
    parent_run_id: int | None = None,
    created_by: str | None = None,
) -> Run:
    """Store a validated config as a queued run with iterations × STAGES pending stages (flushes).

    `created_by` is the name of the token that asked for it (None: not known, e.g. old rows)."""
    run = Run(
        name=config.name,
        objective=config.objective.name,
        status="queued",
        config=config.model_dump(mode="json"),
        sweep_id=sweep_id,
        sweep_point=sweep_point,
        parent_run_id=parent_run_id,
        created_by=created_by,
    )
    session.add(run)
    session.flush()
    iterations = [Iteration(run_id=run.id, index=k) for k in range(config.iterations)]
    session.add_all(iterations)
    session.flush()
    session.add_all(
        Stage(
            run_id=run.id,
            iteration_id=it.id,
            iteration=it.index,
            name=name,
            position=it.index * len(STAGES) + i,
            queue=queue_for(name, config),
            status="pending",
            attempt=0,
            progress=0.0,
        )
        for it in iterations
        for i, name in enumerate(STAGES)
    )
    session.flush()
    return run


def get_run(session: Session, run_id: int) -> Run | None:
    return session.get(Run, run_id)


def require_run(session: Session, run_id: int) -> Run:
    """The run, or NotFoundError."""
    run = session.get(Run, run_id)
    if run is None:
        raise NotFoundError(f"run {run_id} not found")
    return run


def list_runs(
    session: Session,
    *,
    status: str | None = None,
    objective: str | None = None,
    name: str | None = None,
    sweep_id: int | None = None,
    created_by: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Run], int]:
    """Runs newest first, filtered; `name` is a case-insensitive substring. Returns (page, total)."""
    query = select(Run)
    if status is not None:
        query = query.where(Run.status == status)
    if objective is not None:
        query = query.where(Run.objective == objective)
    if name:
        query = query.where(Run.name.ilike(f"%{_escape_like(name)}%", escape="\\"))
    if sweep_id is not None:
        query = query.where(Run.sweep_id == sweep_id)
    if created_by is not None:
        query = query.where(Run.created_by == created_by)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    page = session.scalars(query.order_by(Run.id.desc()).limit(limit).offset(offset)).all()
    return list(page), total


def count_active_runs(session: Session) -> int:
    """Runs queued or running: the work a run submitted now waits behind."""
    return session.scalar(select(func.count()).where(Run.status.in_(RUN_ACTIVE))) or 0


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True)
class RunProgress:
    """Where a run stands: finished stages out of all, and the stage that is active now."""

    done: int
    total: int
    current_stage: str | None
    current_iteration: int | None


def run_progress(session: Session, run_ids: Sequence[int]) -> dict[int, RunProgress]:
    """Progress of many runs in two queries (list pages must not issue one query per run)."""
    if not run_ids:
        return {}
    counts = session.execute(
        select(
            Stage.run_id,
            func.count(),
            func.sum(case((Stage.status.in_(STAGE_DONE), 1), else_=0)),
        )
        .where(Stage.run_id.in_(run_ids))
        .group_by(Stage.run_id)
    ).all()
    first_open = session.execute(
        select(Stage.run_id, Stage.name, Stage.iteration, Stage.position)
        .where(Stage.run_id.in_(run_ids), Stage.status.not_in(STAGE_DONE))
        .order_by(Stage.run_id, Stage.position)
    ).all()
    current: dict[int, tuple[str, int]] = {}
    for run_id, name, iteration, _ in first_open:
        current.setdefault(run_id, (name, iteration))
    return {
        run_id: RunProgress(
            done=int(done or 0),
            total=int(total),
            current_stage=current.get(run_id, (None, None))[0],
            current_iteration=current.get(run_id, (None, None))[1],
        )
        for run_id, total, done in counts
    }


def first_open_stage(session: Session, run_id: int) -> Stage | None:
    """The first stage (by position) that is neither succeeded nor skipped."""
    return session.scalars(
        select(Stage)
        .where(Stage.run_id == run_id, Stage.status.not_in(STAGE_DONE))
        .order_by(Stage.position)
        .limit(1)
    ).first()


def prepare_launch(session: Session, run: Run) -> Stage | None:
    """Queue the run's first open stage and stamp `launched_at` (no commit: `backend.lifecycle`
    commits and sends). None when that stage is already queued or running."""
    stage = first_open_stage(session, run.id)
    if stage is None or stage.status in ("queued", "running"):
        return None
    run.launched_at = utcnow()
    return mark_queued(stage)


def mark_cancelled(session: Session, run: Run) -> list[str]:
    """Mark `run` and its unfinished stages cancelled (flushes); the task ids to revoke.

    ConflictError if the run already finished. The caller (`backend.lifecycle.cancel_run`)
    commits, revokes and refills the sweep's slots.
    """
    if run.status in RUN_FINISHED:
        raise ConflictError(f"run {run.id} is already {run.status}")
    now = utcnow()
    active = session.scalars(
        select(Stage).where(Stage.run_id == run.id, Stage.status.in_(("queued", "running")))
    ).all()
    task_ids = [s.task_id for s in active if s.task_id]
    execute_update(
        session,
        update(Stage)
        .where(Stage.run_id == run.id, Stage.status.in_(("pending", "queued", "running")))
        .values(status="cancelled", finished_at=now),
        (Stage, {"run_id": run.id}),
    )
    run.status = "cancelled"
    run.finished_at = now
    session.flush()
    return task_ids


def reset_for_resume(session: Session, run: Run) -> None:
    """Put a failed or cancelled run back to queued, never launched (flushes).

    Unfinished stages go back to pending (their attempt counters are kept) and the iterations
    from the first open one on are reopened. ConflictError for any other status. The caller
    (`backend.lifecycle.resume_run`) launches it.
    """
    if run.status not in ("failed", "cancelled"):
        raise ConflictError(f"run {run.id} is {run.status}; only failed or cancelled runs resume")
    execute_update(
        session,
        update(Stage)
        .where(Stage.run_id == run.id, Stage.status.not_in(STAGE_DONE))
        .values(
            status="pending",
            progress=0.0,
            message=None,
            error=None,
            task_id=None,
            pid=None,
            finished_at=None,
            queued_at=None,
        ),
        (Stage, {"run_id": run.id}),
    )
    execute_update(
        session,
        update(Iteration)
        .where(Iteration.run_id == run.id, Iteration.index >= _first_open_iteration(session, run.id))
        .values(finished_at=None),
        (Iteration, {"run_id": run.id}),
    )
    run.status = "queued"
    run.error = None
    run.finished_at = None
    run.launched_at = None
    session.flush()


def _first_open_iteration(session: Session, run_id: int) -> int:
    stage = first_open_stage(session, run_id)
    return stage.iteration if stage is not None else 1 << 30


def is_run_cancelled(session: Session, run_id: int) -> bool:
    """The store-level cancel flag the worker checks between and during stages."""
    return session.scalar(select(Run.status).where(Run.id == run_id)) == "cancelled"


def mark_run_failed(session: Session, run_id: int, error: str) -> bool:
    """Fail an active run with `error` (flushes). False if it had already finished."""
    failed = (
        update(Run)
        .where(Run.id == run_id, Run.status.in_(("queued", "running")))
        .values(status="failed", error=error, finished_at=utcnow(), updated_at=utcnow())
    )
    return execute_update(session, failed, (Run, {"id": run_id})) == 1
