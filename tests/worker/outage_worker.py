"""Worker A of the outage test: one `execute_stage` call, in its own process, against the database
its environment names (through the test's TCP proxy). Prints its outcome as one JSON line.

`python -m tests.worker.outage_worker STAGE_ID STAGE ENTRY`
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

import worker.stage_process
from backend.launcher import CeleryLauncher
from backend.settings import get_settings
from worker.execution import execute_stage


def main(argv: list[str]) -> None:
    stage_id, stage, entry = int(argv[0]), argv[1], argv[2]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker-A %(name)s: %(message)s")
    worker.stage_process._CONTEXT.set_forkserver_preload([])  # the test body needs no warm torch
    settings = get_settings()
    outcome = execute_stage(
        stage_id,
        expected_stage=stage,
        task_id="outage-worker-a",
        settings=settings,
        launcher=CeleryLauncher(settings),
        entry=entry,
    )
    print(json.dumps({"outcome": outcome, "returned_at": time.time()}), flush=True)
    # A store call may still hang in the heartbeat thread; the process must not wait for it.
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
