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

The pass decides from a snapshot (`stale_snapshot`) and acts on each stage later, in its own
transaction. In between, a worker may claim the stage (a stage queued behind a long job is
claimed exactly when that job ends), so each action is fenced on the snapshot's attempt and
re-checks staleness: a stage that moved on is left alone instead of being taken from a healthy
attempt.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from backend.db import session_scope
from backend.launcher import Launcher
from backend.lifecycle import launch_waiting_sweep_runs
from backend.store.stages import fail_stale_stage, requeue_stale_stage, stale_stages
from backend.store.sweeps import sweeps_with_waiting_runs
from worker.options import WorkerOptions

log = logging.getLogger(__name__)


@dataclass
class ReconcileReport:
    """What one pass did (stage/run ids), for logs and tests."""

    requeued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    launched_runs: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class StaleStage:
    """What the snapshot saw of a stage: its status and the attempt that fences the action."""

    stage_id: int
    status: str
    attempt: int


def stale_snapshot(options: WorkerOptions) -> list[StaleStage]:
    """The stages that looked stale just now (read in one short transaction)."""
    with session_scope() as session:
        return [
            StaleStage(stage.id, stage.status, stage.attempt)
            for stage in stale_stages(
                session,
                heartbeat_timeout_s=options.heartbeat_timeout_s,
                queued_timeout_s=options.queued_timeout_s,
            )
        ]


def reconcile_once(options: WorkerOptions, launcher: Launcher) -> ReconcileReport:
    """One pass over stale stages and waiting sweeps."""
    report = ReconcileReport()
    for stale in stale_snapshot(options):
        reconcile_stage(stale, options, launcher, report)
    with session_scope() as session:
        sweeps = sweeps_with_waiting_runs(session)
    for sweep_id in sweeps:
        with session_scope() as session:
            report.launched_runs.extend(launch_waiting_sweep_runs(session, sweep_id, launcher))
    if report.requeued or report.failed or report.launched_runs:
        log.info("reconciler: %s", report)
    return report


def reconcile_stage(
    stale: StaleStage, options: WorkerOptions, launcher: Launcher, report: ReconcileReport
) -> None:
    """Requeue (or, past the retry budget, fail) one snapshot stage if it is still as seen."""
    with session_scope() as session:
        if stale.status == "running" and stale.attempt >= options.max_attempts:
            error = (
                f"worker lost: no heartbeat for {options.heartbeat_timeout_s:g} s "
                f"(after {stale.attempt} attempts, the retry budget)"
            )
            failed = fail_stale_stage(
                session,
                stale.stage_id,
                error,
                attempt=stale.attempt,
                heartbeat_timeout_s=options.heartbeat_timeout_s,
            )
            if failed is not None:
                report.failed.append(stale.stage_id)
            return
        requeued = requeue_stale_stage(
            session,
            stale.stage_id,
            launcher,
            attempt=stale.attempt,
            heartbeat_timeout_s=options.heartbeat_timeout_s,
            queued_timeout_s=options.queued_timeout_s,
        )
        if requeued is not None:
            report.requeued.append(stale.stage_id)
