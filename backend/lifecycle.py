"""A run's lifecycle: launch, cancel, resume, and filling a sweep's free slots.

The store changes the rows; this module commits them and then talks to the broker through the
`Launcher` it is given (routes get theirs from `LauncherDep`, the worker passes its own
`CeleryLauncher`): there is no process-wide default. Every function COMMITS before it sends, so
a worker that receives a wake-up always finds its stage `queued` (docs/architecture.md §4).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from backend.launcher import Launcher
from backend.store.errors import ConflictError
from backend.store.launching import commit_and_send
from backend.store.models import RUN_FINISHED, Run, Stage
from backend.store.runs import mark_cancelled, prepare_launch, require_run, reset_for_resume
from backend.store.sweeps import runs_for_free_slots


def launch_run(session: Session, run_id: int, launcher: Launcher) -> Stage | None:
    """Queue the run's first open stage, COMMIT, and enqueue it. None if nothing was launched
    (its first open stage is already queued or running); ConflictError for a finished run."""
    run = require_run(session, run_id)
    if run.status in RUN_FINISHED:
        raise ConflictError(f"run {run_id} is {run.status}")
    stage = prepare_launch(session, run)
    commit_and_send(session, [stage] if stage else [], launcher)
    return stage


def cancel_run(session: Session, run_id: int, launcher: Launcher) -> Run:
    """Mark the run and its unfinished stages cancelled, COMMIT, revoke their tasks.

    The worker sees the flag on its next heartbeat and kills the stage's process group. A sweep
    child frees a slot, so waiting siblings are launched. Cancelling a cancelled run is a no-op;
    ConflictError for a succeeded or failed one.
    """
    run = require_run(session, run_id)
    if run.status == "cancelled":
        return run
    task_ids = mark_cancelled(session, run)
    session.commit()
    launcher.revoke(task_ids)
    if run.sweep_id is not None:
        launch_waiting_sweep_runs(session, run.sweep_id, launcher)
    session.refresh(run)
    return run


def resume_run(session: Session, run_id: int, launcher: Launcher) -> Run:
    """Continue a failed or cancelled run from its first stage that did not succeed.

    A sweep child waits for a free slot like its never-launched siblings; ConflictError for a
    run that is neither failed nor cancelled.
    """
    run = require_run(session, run_id)
    reset_for_resume(session, run)
    if run.sweep_id is not None:
        session.commit()
        launch_waiting_sweep_runs(session, run.sweep_id, launcher)
    else:
        stage = prepare_launch(session, run)
        commit_and_send(session, [stage] if stage else [], launcher)
    session.refresh(run)
    return run


def launch_waiting_sweep_runs(session: Session, sweep_id: int, launcher: Launcher) -> list[int]:
    """Launch waiting children while fewer than `max_concurrent` are active; COMMITS, then enqueues.

    Returns the launched run ids. Call it whenever a child of the sweep leaves the active set
    (succeeded, failed, cancelled) and after creating the sweep; the reconciler calls it for
    every sweep with waiting children, so a missed call only delays a launch.
    """
    waiting = runs_for_free_slots(session, sweep_id)
    stages = [stage for run in waiting if (stage := prepare_launch(session, run)) is not None]
    commit_and_send(session, stages, launcher)  # also releases the sweep row's lock
    return [run.id for run in waiting]
