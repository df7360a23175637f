"""Workers: each Celery worker registers itself (queues, host, GPUs) and heartbeats the stage it
is running; GET /workers lists them. A worker that stops heartbeating is shown as not alive."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from backend.store.models import Worker, execute_update, utcnow


def register_worker(
    session: Session, *, name: str, host: str, pid: int, queues: list[str], gpus: list[dict[str, Any]]
) -> Worker:
    """Insert or refresh the worker called `name` (a restarted worker keeps its row); flushes."""
    now = utcnow()
    worker = session.scalars(select(Worker).where(Worker.name == name)).first()
    if worker is None:
        worker = Worker(name=name)
        session.add(worker)
    worker.host, worker.pid, worker.queues, worker.gpus = host, pid, list(queues), list(gpus)
    worker.stage_id = None
    worker.started_at = worker.heartbeat_at = now
    session.flush()
    return worker


def worker_heartbeat(session: Session, name: str) -> bool:
    """Refresh the worker's heartbeat; False when it is not registered (register it again)."""
    beat = update(Worker).where(Worker.name == name).values(heartbeat_at=utcnow())
    return execute_update(session, beat, (Worker, {"name": name})) == 1


def set_worker_stage(session: Session, name: str, stage_id: int | None) -> None:
    """Record the stage the worker is running now (None when idle)."""
    change = update(Worker).where(Worker.name == name).values(stage_id=stage_id, heartbeat_at=utcnow())
    execute_update(session, change, (Worker, {"name": name}))


def list_workers(session: Session) -> list[Worker]:
    """Every registered worker, most recently seen first."""
    return list(session.scalars(select(Worker).order_by(Worker.heartbeat_at.desc(), Worker.id)).all())


def is_alive(worker: Worker, *, timeout_s: float) -> bool:
    return worker.heartbeat_at >= utcnow() - timedelta(seconds=timeout_s)
