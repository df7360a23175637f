"""The worker says what it has: GPUs detected at start, queues (with `gpuN` for its GPU count),
a heartbeat row in the `workers` table and the stage it is running (GET /workers serves them).

GPUs are probed in a short-lived `python -m aipo_core.devices` process, so the worker process
itself never creates a CUDA context (that would hold memory on every GPU for the worker's life);
a host without `nvidia-smi` has no NVIDIA driver and skips the probe.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from backend.db import session_scope
from backend.routing import gpu_queues
from backend.store.workers import register_worker, set_worker_stage, worker_heartbeat

log = logging.getLogger(__name__)


def detect_gpus(timeout_s: float = 120.0) -> list[dict[str, Any]]:
    """[{index, name, memory_gib}] of the CUDA GPUs this worker's stages will see."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        done = subprocess.run(
            [sys.executable, "-m", "aipo_core.devices"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=True,
        )
        return list(json.loads(done.stdout)["gpus"])
    except (subprocess.SubprocessError, ValueError, KeyError) as exc:
        log.warning("GPU probe failed, registering no GPUs: %s", exc)
        return []


class WorkerRegistration:
    """This worker's row: registered once, then refreshed by a daemon heartbeat thread."""

    def __init__(self, name: str, queues: list[str], gpus: list[dict[str, Any]]) -> None:
        self.name, self.queues, self.gpus = name, list(queues), list(gpus)
        self._stop = threading.Event()

    def register(self) -> None:
        with session_scope() as session:
            register_worker(
                session,
                name=self.name,
                host=socket.gethostname(),
                pid=os.getpid(),
                queues=self.queues,
                gpus=self.gpus,
            )

    def beat(self) -> None:
        """One heartbeat; re-registers when the row is gone (e.g. a database restored meanwhile)."""
        with session_scope() as session:
            known = worker_heartbeat(session, self.name)
        if not known:
            self.register()

    def start(self, interval_s: float) -> threading.Thread:
        self.register()

        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.beat()
                except Exception:  # noqa: BLE001 - the database may be briefly down; beat again later
                    log.exception("worker heartbeat failed")

        thread = threading.Thread(target=loop, name="aipo-worker-heartbeat", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()


def extra_queues(consumed: list[str], gpus: list[dict[str, Any]]) -> list[str]:
    """Queues to add to what the command line asked for: `gpu2` … `gpuG` for G GPUs."""
    return gpu_queues(consumed, len(gpus))


@contextmanager
def working_on(worker_name: str | None, stage_id: int) -> Iterator[None]:
    """Show `stage_id` as this worker's current stage for the duration of the block."""
    if worker_name:
        _set_stage(worker_name, stage_id)
    try:
        yield
    finally:
        if worker_name:
            _set_stage(worker_name, None)


def _set_stage(worker_name: str, stage_id: int | None) -> None:
    try:
        with session_scope() as session:
            set_worker_stage(session, worker_name, stage_id)
    except Exception:  # noqa: BLE001 - bookkeeping must never fail a stage
        log.exception("could not record worker %s's stage", worker_name)
