"""Stage order and queue routing: the ONE table both the backend and the worker read.

The backend enqueues tasks by name (`task_name`) on the queue given here; the worker's Celery
app routes with `task_routes()`. Every model-running stage goes to `gpu`; housekeeping
(the reconciler) runs on `cpu` so it is never stuck behind a long training job.

A stage that needs N > 1 GPUs (multi-process training, tensor/data-parallel vLLM generation and
evaluation) goes to `gpuN` instead; a worker that consumes `gpu` and has G GPUs also consumes
`gpu2` … `gpuG` (`gpu_queues`), so a 4-GPU training stage is never picked up by a 1-GPU worker.
The queue is decided once, when the run is created, and stored on the stage row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aipo_core.config import RunConfig

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


def required_gpus(stage: str, config: RunConfig) -> int:
    """GPUs a stage of `config` needs on one worker (0 for `device: cpu`)."""
    if config.device == "cpu":
        return 0
    if stage == "train":
        return config.training.num_processes
    if stage in ("generate", "evaluate"):  # evaluation answers with the generation backend
        return config.generation.gpus
    return 1


def queue_for(stage: str, config: RunConfig | None = None) -> str:
    """Queue a stage's task is sent to: its table entry, or `gpuN` when it needs N > 1 GPUs."""
    if stage not in STAGE_QUEUES:
        raise ValueError(f"unknown stage {stage!r}; known: {', '.join(STAGES)}")
    gpus = required_gpus(stage, config) if config is not None else 1
    return f"gpu{gpus}" if gpus > 1 else STAGE_QUEUES[stage]


def gpu_queues(queues: list[str], gpu_count: int) -> list[str]:
    """The multi-GPU queues a worker consuming `queues` with `gpu_count` GPUs also consumes."""
    if "gpu" not in queues:
        return []
    return [f"gpu{n}" for n in range(2, gpu_count + 1) if f"gpu{n}" not in queues]


def task_routes() -> dict[str, dict[str, str]]:
    """Celery `task_routes` built from the table above."""
    routes = {task_name(stage): {"queue": queue} for stage, queue in STAGE_QUEUES.items()}
    routes[RECONCILE_TASK] = {"queue": "cpu"}
    return routes
