"""GET /workers, stage placement in GET /runs/{id}/stages, GPU-count routing of stages."""

from __future__ import annotations

import uuid
from datetime import timedelta

from backend.db import get_sessionmaker
from backend.store import stages as stage_store
from backend.store.models import Worker, utcnow
from backend.store.workers import register_worker, set_worker_stage, worker_heartbeat
from tests.backend.conftest import Api

H100 = {"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_gib": 79.1}
PLACEMENT = {
    "device": "cuda:0",
    "dtype": "float32",
    "compute_dtype": "bfloat16",
    "num_processes": 4,
    "strategy": "ddp",
    "gpu_count": 4,
    "gpu_name": "NVIDIA H100 80GB HBM3",
    "gpu_memory_gib": 79.1,
}


def _session(api: Api):
    return get_sessionmaker(api.settings.resolved_database_url)()


def test_workers_say_what_they_have_and_run(api: Api) -> None:
    run = api.create_run(iterations=1, training={"num_processes": 4, "batch_size": 8})
    busy, idle = f"gpu-{uuid.uuid4().hex[:6]}@node1", f"cpu-{uuid.uuid4().hex[:6]}@node2"
    with _session(api) as session:
        stage_id = stage_store.list_stages(session, run["id"])[3].id
        register_worker(
            session,
            name=busy,
            host="node1",
            pid=11,
            queues=["gpu", "cpu", "gpu2", "gpu3", "gpu4"],
            gpus=[{**H100, "index": i} for i in range(4)],
        )
        register_worker(session, name=idle, host="node2", pid=12, queues=["cpu"], gpus=[])
        set_worker_stage(session, busy, stage_id)
        session.get(Worker, session.query(Worker.id).filter_by(name=idle).scalar()).heartbeat_at = (
            utcnow() - timedelta(hours=1)
        )
        session.commit()
        assert worker_heartbeat(session, busy) and not worker_heartbeat(session, "nobody@nowhere")
        session.commit()
    listed = {w["name"]: w for w in api.client.get("/api/v1/workers").json()["items"]}
    assert listed[busy]["gpu_count"] == 4 and listed[busy]["gpus"][3] == {**H100, "index": 3}
    assert listed[busy]["stage"] == {"id": stage_id, "run_id": run["id"], "iteration": 0, "name": "train"}
    assert listed[busy]["alive"] and listed[busy]["queues"][-1] == "gpu4"
    assert listed[idle]["stage"] is None and listed[idle]["gpus"] == [] and not listed[idle]["alive"]
    assert api.client.get("/api/v1/workers", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_stage_queue_follows_the_gpus_it_needs(api: Api) -> None:
    multi = api.create_run(
        iterations=1,
        training={"num_processes": 4, "batch_size": 8},
        generation={"backend": "vllm", "tensor_parallel_size": 2},
    )
    queues = {
        s["name"]: s["queue"] for s in api.client.get(f"/api/v1/runs/{multi['id']}/stages").json()["items"]
    }
    assert queues == {
        "self_instruct": "gpu",
        "generate": "gpu2",
        "rank": "gpu",
        "train": "gpu4",
        "evaluate": "gpu2",  # the evaluated models answer through vLLM too
    }
    on_cpu = api.create_run(iterations=1, device="cpu", training={"num_processes": 2, "batch_size": 8})
    items = api.client.get(f"/api/v1/runs/{on_cpu['id']}/stages").json()["items"]
    assert {s["queue"] for s in items} == {"gpu"}


def test_finished_stage_serves_its_placement(api: Api) -> None:
    run = api.create_run(iterations=1)
    with _session(api) as session:
        first = stage_store.list_stages(session, run["id"])[0]
        assert stage_store.claim_stage(session, first.id) is not None
        assert stage_store.complete_stage(session, first.id, placement=PLACEMENT) is not None
        session.commit()
    items = api.client.get(f"/api/v1/runs/{run['id']}/stages").json()["items"]
    assert items[0]["placement"] == PLACEMENT
    assert items[1]["placement"] is None
