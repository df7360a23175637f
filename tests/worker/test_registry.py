"""Workers register their queues and GPUs, add `gpuN` queues for their GPU count, show their stage."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery

from backend.db import session_scope
from backend.settings import Settings
from backend.store.stages import list_stages
from backend.store.workers import list_workers
from tests.worker.conftest import new_run
from tests.worker.harness import TINY_RUN, deployment, postgres_database, redis_database, submit, wait_until
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


@pytest.mark.services
@pytest.mark.timeout(600)
def test_a_real_worker_registers_and_leaves_a_two_gpu_stage_to_a_worker_with_two(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real Celery worker (PostgreSQL, Redis, this GPU-less host) registers its queues, host and
    GPUs, GET /workers shows the stage it runs, and it never claims a stage queued on `gpu2`."""
    run = {
        **TINY_RUN,
        "name": "two-gpu-generate",
        "generation": {**TINY_RUN["generation"], "backend": "vllm", "tensor_parallel_size": 2},
    }
    with (
        postgres_database() as database,
        redis_database() as broker,
        deployment(tmp_path, monkeypatch, database_url=database, broker_url=broker) as dep,
    ):
        run_id = submit(dep, run)

        def stages() -> dict[str, dict[str, Any]]:
            with dep.client as client:
                items = client.get(f"/runs/{run_id}/stages").json()["items"]
            return {stage["name"]: stage for stage in items}

        def workers() -> list[dict[str, Any]]:
            with dep.client as client:
                return client.get("/workers").json()["items"]

        first = stages()["self_instruct"]
        assert stages()["generate"]["queue"] == "gpu2"
        (worker,) = wait_until(
            lambda: [w for w in workers() if (w["stage"] or {}).get("id") == first["id"]],
            timeout_s=180,
            what="the worker to show the self_instruct stage it runs",
            dep=dep,
        )
        assert worker["host"] == socket.gethostname() and worker["alive"]
        assert (worker["gpus"], worker["gpu_count"], sorted(worker["queues"])) == ([], 0, ["cpu", "gpu"])
        assert worker["stage"] == {
            "id": first["id"],
            "run_id": run_id,
            "iteration": 0,
            "name": "self_instruct",
        }
        wait_until(
            lambda: stages()["self_instruct"]["status"] == "succeeded",
            timeout_s=300,
            what="self_instruct to succeed",
            dep=dep,
        )
        time.sleep(8)  # the reconciler (1 s passes, 5 s queued timeout) re-sends generate's wake-up
        generate = stages()["generate"]
        assert (generate["status"], generate["attempt"]) == ("queued", 0)
        (idle,) = workers()
        assert idle["name"] == worker["name"] and idle["stage"] is None and idle["alive"]
