"""One stage attempt from wake-up to the next wake-up: claim → child process → record → enqueue next.

This is the body of every `aipo.stage.<name>` task. It is safe to run twice for the same
message (at-least-once delivery, re-sent wake-ups): `claim_stage` lets exactly one attempt
proceed and returns None for a done, fresh-running or cancelled stage; the stage body skips
work whose artifact is already complete; everything loaded into the database is keyed
(metrics, by attempt) or replaced as a whole (pairs, eval samples).

Each attempt writes into its own scratch folder (`iter_{k}/.attempts/{stage}-{attempt}/`),
which `record_success` publishes only while the attempt still holds the stage. The attempt's
`Lease` starts before the claim and is renewed by every heartbeat the store accepts; when it
runs out (database unreachable) the child is stopped before anyone may take the stage over.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from sqlalchemy.exc import InterfaceError, OperationalError

from aipo_core.artifacts import discard_scratch, scratch_dir
from backend.db import session_scope
from backend.launcher import Launcher
from backend.settings import Settings
from backend.store.stages import claim_stage, get_stage, stage_log_path
from worker.claimed import ClaimedStage
from worker.control import StoreStageControl
from worker.finalize import record_failure, record_success
from worker.lease import Lease
from worker.options import WorkerOptions
from worker.stage_process import StageFiles, StageProcess
from worker.stage_runner import DEFAULT_ENTRY
from worker.supervise import keepalive, supervise

log = logging.getLogger(__name__)


def execute_stage(
    stage_id: int,
    *,
    expected_stage: str,
    task_id: str | None,
    settings: Settings,
    launcher: Launcher,
    entry: str = DEFAULT_ENTRY,
) -> str:
    """Run one attempt of a stage; returns a one-word outcome for the task log.

    skipped (nothing to claim), succeeded, failed, stopped (cancelled or taken over while
    running), lost (the lease ran out: the store was unreachable), superseded (finished, but
    another attempt holds the stage now; nothing was kept).
    """
    options = WorkerOptions.from_settings(settings)
    root = settings.resolved_artifact_root
    lease = Lease(options.lease_s)  # from before the claim: the claim stamps the first heartbeat
    claimed = _claim(stage_id, expected_stage, task_id, root, options)
    if claimed is None:
        return "skipped"
    scratch = scratch_dir(root, str(claimed.run_id), claimed.iteration, claimed.name, claimed.attempt)
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        return _run_attempt(claimed, scratch, lease, options, root, launcher, entry, settings)
    finally:
        discard_scratch(scratch)


def _run_attempt(
    claimed: ClaimedStage,
    scratch: Path,
    lease: Lease,
    options: WorkerOptions,
    root: Path,
    launcher: Launcher,
    entry: str,
    settings: Settings,
) -> str:
    files = StageFiles.under(claimed.log_path.parent, claimed.log_path.stem, attempt=claimed.attempt)
    spec = {
        "entry": entry,
        "stage": claimed.name,
        "config": claimed.config,
        "artifact_root": str(root),
        "run_id": str(claimed.run_id),
        "iteration": claimed.iteration,
        "events": str(files.events),
        "result": str(files.result),
        "model_cache_dir": str(settings.home / "models"),
        # The operator's loading policy: the child re-checks the config and every load against it.
        "model_access": settings.model_access().to_dict(),
        "scratch_dir": str(scratch),
    }
    control = StoreStageControl(
        claimed.stage_id, claimed.run_id, claimed.iteration, claimed.name, claimed.attempt
    )
    with keepalive(control, interval_s=options.heartbeat_interval_s, lease=lease):
        process = StageProcess.start(spec, files, attempt=claimed.attempt)
    control.pid = process.pid  # stored by the next heartbeat
    log.info(
        "stage %d (%s, run %d, iteration %d) attempt %d: pid %d",
        claimed.stage_id,
        claimed.name,
        claimed.run_id,
        claimed.iteration,
        claimed.attempt,
        process.pid,
    )
    result = supervise(
        process,
        control,
        interval_s=options.heartbeat_interval_s,
        kill_grace_s=options.kill_grace_s,
        lease=lease,
    )
    if result.lost:
        return "lost"
    if result.stopped or result.outcome is None:
        return "stopped"
    outcome = result.outcome
    if outcome.ok:
        try:
            done = record_success(claimed, outcome.summary, artifact_root=root, launcher=launcher)
        except (OperationalError, InterfaceError):
            raise  # the database is unreachable: the reconciler retries once it is back
        except Exception as exc:  # noqa: BLE001 - outputs the store refuses: retrying cannot help
            log.exception("stage %d: storing its outputs failed", claimed.stage_id)
            outcome = replace(outcome, ok=False, error=f"storing the stage's outputs failed: {exc}")
        else:
            return "succeeded" if done else "superseded"
    record_failure(claimed, outcome, max_attempts=options.max_attempts, launcher=launcher)
    return "failed"


def _claim(
    stage_id: int, expected_stage: str, task_id: str | None, root: Path, options: WorkerOptions
) -> ClaimedStage | None:
    with session_scope() as session:
        stage = get_stage(session, stage_id)
        if stage is None:
            log.warning("stage %d does not exist; dropping its wake-up", stage_id)
            return None
        if stage.name != expected_stage:
            log.error(
                "stage %d is a %s stage, not %s; dropping the wake-up", stage_id, stage.name, expected_stage
            )
            return None
        log_path = stage_log_path(root, stage.run_id, stage.iteration, stage.name)
        claimed = claim_stage(
            session,
            stage_id,
            task_id=task_id,
            log_path=str(log_path),
            stale_after_s=options.heartbeat_timeout_s,
        )
        if claimed is None:
            log.info("stage %d is done, running elsewhere or cancelled; nothing to do", stage_id)
            return None
        return ClaimedStage(
            stage_id=claimed.id,
            run_id=claimed.run_id,
            iteration=claimed.iteration,
            name=claimed.name,
            attempt=claimed.attempt,
            config=dict(claimed.run.config),
            log_path=log_path,
        )
