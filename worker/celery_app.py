"""The worker's Celery app: `celery -A worker.celery_app worker -Q gpu,cpu`.

A worker consuming `gpu` on a host with G GPUs also consumes `gpu2` … `gpuG` (stages that need
that many GPUs, see `backend.routing`), and registers itself with its queues and GPUs (see
`worker.registry`; GET /workers).

It is built from `backend.broker.celery_config`, the same dictionary the API sends with, so the
producer and the consumer can never disagree on the broker, its folders or the routes. The
worker only adds consumer-side keys. Starting the in-worker reconciler (see `worker.periodic`)
and warming the stage forkserver (see `worker.stage_process`) hang off the `worker_ready`
signal, which fires once in the worker's main process for every pool type, so both
deployments get them without a separate beat process.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, signals

from backend.broker import celery_config
from backend.settings import Settings, get_settings


def worker_config(settings: Settings) -> dict[str, Any]:
    """The shared broker config plus what only the consumer needs."""
    return {
        **celery_config(settings),
        # One stage at a time per worker process; the stage itself can use every GPU/core.
        "worker_concurrency": 1,
        # A lost connection must not cancel the supervising task: the stage child runs on and
        # the database, not the broker, records its progress.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "broker_connection_max_retries": None,
        # Never retry forever inside a task: an unsent wake-up is re-sent by the reconciler.
        "task_publish_retry_policy": {"max_retries": 3, "interval_start": 0.5, "interval_step": 1.0},
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "include": ["worker.tasks"],
    }


def create_app(settings: Settings | None = None) -> Celery:
    """A configured worker app (tests build their own from explicit settings)."""
    app = Celery("aipo")
    app.conf.update(worker_config(settings or get_settings()))
    return app


#: The worker's app. Its configuration is read on first use, not at import, so importing the
#: tasks (tests, tooling) neither reads the environment nor creates broker folders.
app = Celery("aipo")
app.add_defaults(lambda: worker_config(get_settings()))


_registration: dict[str, Any] = {}


@signals.celeryd_after_setup.connect
def _consume_gpu_queues(sender: str, instance: Any, **_: Any) -> None:
    """Detect this host's GPUs and add the `gpuN` queues they qualify the worker for."""
    from worker.registry import detect_gpus, extra_queues

    queues = instance.app.amqp.queues
    consumed = sorted(queues.consume_from) if queues.consume_from else sorted(queues)
    gpus = detect_gpus() if "gpu" in consumed else []
    for queue in extra_queues(consumed, gpus):
        queues.select_add(queue)
        consumed.append(queue)
    _registration.update(name=sender, queues=consumed, gpus=gpus)


@signals.worker_ready.connect
def _start_reconciler(**_: Any) -> None:
    from worker.periodic import start_reconciler_thread
    from worker.registry import WorkerRegistration
    from worker.stage_process import warm_up

    settings = get_settings()
    start_reconciler_thread(settings)
    if _registration:
        registration = WorkerRegistration(**_registration)
        registration.start(interval_s=settings.stage_heartbeat_interval_s)
    warm_up()


@signals.worker_shutdown.connect
def _stop_stage_forkserver(**_: Any) -> None:
    from worker.stage_process import shut_down

    shut_down()


@signals.worker_process_init.connect
def _fresh_connections_after_fork(**_: Any) -> None:
    """A forked pool process must not reuse database connections opened by its parent."""
    from backend.db import dispose_engines

    dispose_engines()
