"""The one Celery/broker configuration shared by the API (producer) and the worker (consumer).

Embedded mode uses kombu's filesystem transport: producer and consumer read and write the same
folders under `$AIPO_HOME/broker`, so no broker server is needed. The database is the source of
truth, so no result backend is configured; messages only carry a stage id.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from backend.home import ensure_private_dir
from backend.routing import task_routes
from backend.settings import FILESYSTEM_BROKER, Settings


def broker_transport_options(settings: Settings) -> dict[str, Any]:
    """Transport options; for the filesystem transport, create and point at its folders."""
    if not settings.broker_url.startswith(FILESYSTEM_BROKER.rstrip("/")):
        return {"visibility_timeout": 12 * 3600}
    root = settings.broker_folder
    folders = {"queue": root / "queue", "processed": root / "processed", "control": root / "control"}
    ensure_private_dir(root)
    for folder in folders.values():
        ensure_private_dir(folder)  # messages name runs and stages: owner-only like the rest of home
    return {
        "data_folder_in": str(folders["queue"]),
        "data_folder_out": str(folders["queue"]),
        "processed_folder": str(folders["processed"]),
        "control_folder": str(folders["control"]),
        "store_processed": False,
    }


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings for both sides; the worker may add its own keys on top."""
    return {
        "broker_url": settings.broker_url,
        "broker_transport_options": broker_transport_options(settings),
        "broker_connection_retry_on_startup": True,
        "result_backend": None,
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": "cpu",
        "task_routes": task_routes(),
        "task_serializer": "json",
        "accept_content": ["json"],
    }


def make_celery_app(settings: Settings, main: str = "aipo") -> Celery:
    """A Celery app configured from settings (no tasks registered: the backend sends by name)."""
    app = Celery(main)
    app.conf.update(celery_config(settings))
    return app
