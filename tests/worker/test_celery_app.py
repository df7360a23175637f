"""The worker's Celery configuration: delivery guarantees, routing and the registered tasks."""

from __future__ import annotations

import pytest

from backend.routing import RECONCILE_TASK, STAGES, queue_for, task_name
from backend.settings import Settings, get_settings
from worker.celery_app import create_app, worker_config

LONGEST_STAGE_S = 6 * 3600  # a long training stage on a big model


def test_delivery_guarantees_for_long_stages() -> None:
    conf = worker_config(Settings(broker_url="redis://127.0.0.1:6379/0"))
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1
    # Redis redelivers an unacknowledged message after the visibility timeout: it must outlast
    # the longest stage or a healthy stage would be started twice.
    assert conf["broker_transport_options"]["visibility_timeout"] > LONGEST_STAGE_S
    assert conf["worker_cancel_long_running_tasks_on_connection_loss"] is False


def test_embedded_broker_needs_no_server(tmp_path) -> None:
    settings = Settings(home=tmp_path)
    conf = worker_config(settings)
    assert conf["broker_url"] == "filesystem://"
    folder = conf["broker_transport_options"]["data_folder_in"]
    assert folder == conf["broker_transport_options"]["data_folder_out"]
    assert folder.startswith(str(tmp_path))


def test_one_task_per_stage_routed_by_the_routing_table(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIPO_HOME", str(tmp_path))  # worker.tasks builds the module-level app
    get_settings.cache_clear()
    app = create_app(Settings(home=tmp_path))
    app.loader.import_default_modules()  # what `celery worker` does: imports worker.tasks
    for stage in STAGES:
        name = task_name(stage)
        assert name in app.tasks, name
        assert app.amqp.router.route({}, name)["queue"].name == queue_for(stage)
    assert RECONCILE_TASK in app.tasks
    get_settings.cache_clear()
