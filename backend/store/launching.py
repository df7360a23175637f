"""Queue a stage in the database, commit, then wake a worker: the order every launch follows.

A worker that receives a stage id must find the row already `queued`, so the commit happens
before the message is sent. A message that is lost after the commit (broker down, process
killed) is harmless: the reconciler re-sends stages queued for too long.
"""

from __future__ import annotations

import logging
import uuid

from sqlalchemy.orm import Session

from backend.launcher import Launcher
from backend.store.models import Stage, utcnow

log = logging.getLogger(__name__)


def mark_queued(stage: Stage) -> Stage:
    """Put `stage` in `queued` with a fresh task id (the caller commits and then `send`s)."""
    stage.status = "queued"
    stage.task_id = uuid.uuid4().hex
    stage.queued_at = utcnow()
    stage.finished_at = None
    return stage


def commit_and_send(session: Session, stages: list[Stage], launcher: Launcher) -> None:
    """Commit the queued state, then enqueue one task per stage (send failures are only logged)."""
    session.commit()
    for stage in stages:
        try:
            launcher.enqueue_stage(stage.name, stage.id, stage.task_id or "", queue=stage.queue)
        except Exception as exc:  # the reconciler re-sends it; the API must not fail
            log.warning(
                "enqueue of stage %s (%s) failed, left to the reconciler: %s", stage.id, stage.name, exc
            )
