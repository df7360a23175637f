"""Stage order and queue routing: the ONE table both the backend and the worker read.

The backend enqueues tasks by name (`task_name`) on the queue given here; the worker's Celery
app routes with `task_routes()`. Every model-running stage goes to `gpu`; housekeeping
(the reconciler) runs on `cpu` so it is never stuck behind a long training job.
"""

from __future__ import annotations

STAGES: tuple[str, ...] = ("self_instruct", "generate", "rank", "train", "evaluate")
TASK_PREFIX = "aipo.stage."
RECONCILE_TASK = "aipo.reconcile"
QUEUES: tuple[str, ...] = ("gpu", "cpu")

STAGE_QUEUES: dict[str, str] = {
    "self_instruct": "gpu",
    "generate": "gpu",
    "rank": "gpu",
    "train": "gpu",
    "evaluate": "gpu",
}


def task_name(stage: str) -> str:
    """Celery task name of a stage, e.g. `aipo.stage.train`."""
    if stage not in STAGE_QUEUES:
        raise ValueError(f"unknown stage {stage!r}; known: {', '.join(STAGES)}")
    return TASK_PREFIX + stage


def queue_for(stage: str) -> str:
    """Queue a stage's task is sent to."""
    if stage not in STAGE_QUEUES:
        raise ValueError(f"unknown stage {stage!r}; known: {', '.join(STAGES)}")
    return STAGE_QUEUES[stage]


def task_routes() -> dict[str, dict[str, str]]:
    """Celery `task_routes` built from the table above."""
    routes = {task_name(stage): {"queue": queue} for stage, queue in STAGE_QUEUES.items()}
    routes[RECONCILE_TASK] = {"queue": "cpu"}
    return routes
