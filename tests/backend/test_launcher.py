"""The Celery launcher sends real messages over the embedded filesystem broker (no worker needed)."""

from __future__ import annotations

import uuid

from kombu import Connection

from backend.broker import broker_transport_options
from backend.launcher import CeleryLauncher
from backend.routing import STAGES, queue_for, task_name, task_routes
from backend.settings import Settings


def test_routing_table_covers_every_stage() -> None:
    assert [task_name(s) for s in STAGES] == [f"aipo.stage.{s}" for s in STAGES]
    assert {queue_for(s) for s in STAGES} <= {"gpu", "cpu"}
    assert task_routes()["aipo.stage.train"] == {"queue": queue_for("train")}


def test_enqueue_writes_a_task_message_to_the_stage_queue(tmp_path) -> None:
    settings = Settings(home=tmp_path)
    task_id = uuid.uuid4().hex
    CeleryLauncher(settings).enqueue_stage("train", 42, task_id)
    options = broker_transport_options(settings)
    with Connection(settings.broker_url, transport_options=options) as connection:
        queue = connection.SimpleQueue(queue_for("train"))
        message = queue.get(timeout=10)
        assert message.headers["task"] == "aipo.stage.train"
        assert message.headers["id"] == task_id
        args, kwargs, _ = message.decode()
        assert args == [42] and kwargs == {}
        message.ack()
        queue.close()


def test_revoke_never_raises(tmp_path) -> None:
    CeleryLauncher(Settings(home=tmp_path)).revoke(["some-task-id"])
