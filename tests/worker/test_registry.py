"""Workers register their queues and GPUs, add `gpuN` queues for their GPU count, show their stage."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from celery import Celery

from backend.db import session_scope
from backend.settings import Settings
from backend.store.stages import list_stages
from backend.store.workers import list_workers
from tests.worker.conftest import new_run
from worker import celery_app, registry
from worker.registry import WorkerRegistration, detect_gpus, extra_queues, working_on

FOUR_GPUS = [{"index": i, "name": "NVIDIA H100 80GB HBM3", "memory_gib": 79.1} for i in range(4)]


def test_gpu_worker_consumes_the_multi_gpu_queues_it_qualifies_for() -> None:
    assert extra_queues(["gpu", "cpu"], FOUR_GPUS) == ["gpu2", "gpu3", "gpu4"]
    assert extra_queues(["gpu"], FOUR_GPUS[:1]) == []
    assert extra_queues(["cpu"], FOUR_GPUS) == []  # a housekeeping worker runs no model


def test_after_setup_adds_queues_to_a_real_celery_app(monkeypatch: pytest.MonkeyPatch) -> None:
    # The hardware is the one thing this CPU machine cannot provide: pretend to have 4 GPUs.
    monkeypatch.setattr(registry, "detect_gpus", lambda: FOUR_GPUS)
    monkeypatch.setattr(celery_app, "_registration", {})
    app = Celery("t")
    app.amqp.queues.select(["gpu", "cpu"])
    celery_app._consume_gpu_queues(sender="w1@host", instance=SimpleNamespace(app=app))
    assert sorted(app.amqp.queues.consume_from) == ["cpu", "gpu", "gpu2", "gpu3", "gpu4"]
    assert celery_app._registration == {
        "name": "w1@host",
        "queues": ["cpu", "gpu", "gpu2", "gpu3", "gpu4"],
        "gpus": FOUR_GPUS,
    }


def test_this_cpu_host_detects_no_gpu() -> None:
    assert detect_gpus() == []


def test_registration_heartbeat_and_current_stage(store: Settings) -> None:
    run_id = new_run()
    with session_scope() as session:
        stage_id = list_stages(session, run_id)[0].id
    registration = WorkerRegistration("w2@host", ["gpu", "cpu"], [])
    registration.register()
    with working_on("w2@host", stage_id):
        with session_scope() as session:
            (worker,) = list_workers(session)
            assert (worker.name, worker.stage_id, worker.queues, worker.gpus) == (
                "w2@host",
                stage_id,
                ["gpu", "cpu"],
                [],
            )
    with session_scope() as session:
        assert list_workers(session)[0].stage_id is None
        session.query(type(worker)).delete()
    registration.beat()  # a lost row is registered again
    with session_scope() as session:
        assert [w.name for w in list_workers(session)] == ["w2@host"]
