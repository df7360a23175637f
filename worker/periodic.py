"""The reconciler's timer: a daemon thread in every worker's main process.

A thread rather than `celery beat` because it must keep working while the worker's only slot
is busy with a long training stage (a beat-sent task would queue behind it), needs no extra
process in either deployment, and a freshly started worker reconciles at once (so a crashed
worker's stage is picked up as soon as its heartbeat expires). `aipo.reconcile` remains a task
for deployments that prefer a beat schedule.
"""

from __future__ import annotations

import logging
import threading

from backend.launcher import CeleryLauncher
from backend.settings import Settings
from worker.options import WorkerOptions
from worker.reconciler import reconcile_once

log = logging.getLogger(__name__)

_started = threading.Event()


def reconcile_forever(options: WorkerOptions, launcher: CeleryLauncher, stop: threading.Event) -> None:
    """Reconcile every `reconcile_interval_s` until `stop` is set; a failed pass is logged, not fatal."""
    while not stop.is_set():
        try:
            reconcile_once(options, launcher)
        except Exception:  # noqa: BLE001 - database or broker briefly down: try again next period
            log.exception("reconciler pass failed")
        stop.wait(options.reconcile_interval_s)


def start_reconciler_thread(
    settings: Settings, stop: threading.Event | None = None
) -> threading.Thread | None:
    """Start the thread once per process (the signal may fire again after a consumer restart)."""
    if _started.is_set():
        return None
    _started.set()
    options = WorkerOptions.from_settings(settings)
    thread = threading.Thread(
        target=reconcile_forever,
        args=(options, CeleryLauncher(settings), stop or threading.Event()),
        name="aipo-reconciler",
        daemon=True,
    )
    thread.start()
    log.info("reconciler thread started (every %g s)", options.reconcile_interval_s)
    return thread
