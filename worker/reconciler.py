"""The reconciler: make the database's intent and the workers' reality agree again.

The broker only carries wake-ups, and wake-ups get lost: a SIGKILLed worker takes its message
with it (the filesystem transport has no acknowledgements; Redis hands an unacknowledged message
back only after its visibility timeout of hours), a Redis restart without persistence drops
every queued message. So, periodically:
- a `running` stage whose heartbeat expired lost its worker: re-queue it, or fail it with the
  error recorded once it has used its retry budget;
- a `queued` stage nobody claimed for a while lost its wake-up: re-send it;
- a sweep with waiting runs and free slots gets them launched.
Every step is a guarded update in the store, so several workers reconciling at once is harmless.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from backend.db import session_scope
from backend.launcher import Launcher
from backend.store.stages import fail_stage, requeue_stage, stale_stages
from backend.store.sweeps import launch_waiting_sweep_runs, sweeps_with_waiting_runs
from worker.options import WorkerOptions

log = logging.getLogger(__name__)


@dataclass
class ReconcileReport:
    """What one pass did (stage/run ids), for logs and tests."""

    requeued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    launched_runs: list[int] = field(default_factory=list)


def reconcile_once(options: WorkerOptions, launcher: Launcher) -> ReconcileReport:
    """One pass over stale stages and waiting sweeps."""
    report = ReconcileReport()
    with session_scope() as session:
        stale = [
            (stage.id, stage.status, stage.attempt)
            for stage in stale_stages(
                session,
                heartbeat_timeout_s=options.heartbeat_timeout_s,
                queued_timeout_s=options.queued_timeout_s,
            )
        ]
    for stage_id, status, attempt in stale:
        _reconcile_stage(stage_id, status, attempt, options, launcher, report)
    with session_scope() as session:
        sweeps = sweeps_with_waiting_runs(session)
    for sweep_id in sweeps:
        with session_scope() as session:
            report.launched_runs.extend(launch_waiting_sweep_runs(session, sweep_id, launcher))
    if report.requeued or report.failed or report.launched_runs:
        log.info("reconciler: %s", report)
    return report


def _reconcile_stage(
    stage_id: int,
    status: str,
    attempt: int,
    options: WorkerOptions,
    launcher: Launcher,
    report: ReconcileReport,
) -> None:
    with session_scope() as session:
        if status == "running" and attempt >= options.max_attempts:
            error = (
                f"worker lost: no heartbeat for {options.heartbeat_timeout_s:g} s "
                f"(after {attempt} attempts, the retry budget)"
            )
            if fail_stage(session, stage_id, error) is not None:
                report.failed.append(stage_id)
            return
        if requeue_stage(session, stage_id, launcher) is not None:
            report.requeued.append(stage_id)
