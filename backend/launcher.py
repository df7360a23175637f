"""Enqueue stage tasks by name, without importing the worker's task bodies.

Every caller is handed its launcher explicitly: the API's routes get the app's from
`backend.deps.LauncherDep` (tests swap in an in-memory record), the worker builds its own
`CeleryLauncher`; there is no process-wide default. Callers commit the stage's `queued` state
BEFORE calling `enqueue_stage`, so a worker that receives the message always finds the row ready.
"""

from __future__ import annotations

import logging
from typing import Protocol

from celery import Celery

from backend.broker import make_celery_app
from backend.routing import queue_for, task_name
from backend.settings import Settings

log = logging.getLogger(__name__)


class Launcher(Protocol):
    """Sends wake-ups for stages and revokes them."""

    def enqueue_stage(self, stage_name: str, stage_id: int, task_id: str, queue: str | None = None) -> None:
        """Send the wake-up on `queue` (the stage row's; None: the stage's default queue)."""
        ...

    def revoke(self, task_ids: list[str]) -> None: ...


class CeleryLauncher:
    """The production launcher: `send_task("aipo.stage.<name>", args=[stage_id])` on the stage's queue."""

    def __init__(self, settings: Settings) -> None:
        self._app: Celery = make_celery_app(settings, main="aipo-backend")

    def enqueue_stage(self, stage_name: str, stage_id: int, task_id: str, queue: str | None = None) -> None:
        self._app.send_task(
            task_name(stage_name), args=[stage_id], queue=queue or queue_for(stage_name), task_id=task_id
        )

    def revoke(self, task_ids: list[str]) -> None:
        # Best effort: the cancelled flag in the database is what the worker acts on. Some
        # transports (the filesystem one) have no broadcast channel for remote control.
        if not task_ids:
            return
        try:
            self._app.control.revoke(task_ids)
        except Exception as exc:  # revocation must never fail a cancel
            log.warning("revoke of %d task(s) failed: %s", len(task_ids), exc)

