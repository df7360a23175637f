"""The Celery tasks: one thin task per stage (`aipo.stage.<name>`) plus `aipo.reconcile`.

Tasks take a stage id only; everything else is read from the database, so a message can be
delivered twice, late, or after a resume without carrying stale state.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from celery import Task

from backend.launcher import CeleryLauncher
from backend.routing import RECONCILE_TASK, STAGES, task_name
from backend.settings import get_settings
from worker.celery_app import app
from worker.execution import execute_stage
from worker.options import WorkerOptions
from worker.reconciler import reconcile_once
from worker.registry import working_on


@lru_cache(maxsize=1)
def _launcher() -> CeleryLauncher:
    return CeleryLauncher(get_settings())


def _make_stage_task(stage: str) -> Task:
    def run_stage_task(self: Task, stage_id: int) -> str:
        with working_on(self.request.hostname, int(stage_id)):
            return execute_stage(
                int(stage_id),
                expected_stage=stage,
                task_id=self.request.id,
                settings=get_settings(),
                launcher=_launcher(),
            )

    run_stage_task.__name__ = f"stage_{stage}"
    run_stage_task.__doc__ = f"Run one attempt of the `{stage}` stage whose id is given."
    return app.task(name=task_name(stage), bind=True, acks_late=True, reject_on_worker_lost=True)(
        run_stage_task
    )


STAGE_TASKS: dict[str, Any] = {stage: _make_stage_task(stage) for stage in STAGES}


@app.task(name=RECONCILE_TASK)
def reconcile() -> dict[str, list[int]]:
    """One reconciler pass (the worker also runs these on a timer, see `worker.periodic`)."""
    report = reconcile_once(WorkerOptions.from_settings(get_settings()), _launcher())
    return {"requeued": report.requeued, "failed": report.failed, "launched_runs": report.launched_runs}
