"""A run's lifecycle on both databases: launch, cancel, resume, and a sweep's concurrency bound.

Each function commits before it sends: the recording launcher only sees stages already queued
in the database, and nothing is sent when the transition is refused.
"""

from __future__ import annotations

import pytest

from backend import lifecycle
from backend.store import runs, stages, sweeps
from backend.store.errors import ConflictError
from tests.backend.conftest import RecordingLauncher, small_config

GRID = {"objective.alpha": [0.03, 0.05, 0.07], "objective.lambda_": [0.2, 0.5]}


def test_launch_queues_first_stage_after_commit(session, launcher: RecordingLauncher) -> None:
    run = runs.create_run(session, small_config())
    stage = lifecycle.launch_run(session, run.id, launcher)
    assert stage is not None and stage.name == "self_instruct" and stage.status == "queued"
    assert launcher.sent == [("self_instruct", stage.id, stage.task_id)]
    assert not session.in_transaction() or not session.dirty  # committed before sending
    assert lifecycle.launch_run(session, run.id, launcher) is None  # already queued: nothing new


def test_cancel_marks_unfinished_stages_and_revokes(session, launcher: RecordingLauncher) -> None:
    run = runs.create_run(session, small_config())
    stage = lifecycle.launch_run(session, run.id, launcher)
    stages.claim_stage(session, stage.id, task_id=stage.task_id)
    session.commit()
    cancelled = lifecycle.cancel_run(session, run.id, launcher)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert launcher.revoked == [stage.task_id]
    assert {s.status for s in stages.list_stages(session, run.id)} == {"cancelled"}
    assert runs.is_run_cancelled(session, run.id)
    assert not stages.heartbeat(session, stage.id)
    assert lifecycle.cancel_run(session, run.id, launcher).status == "cancelled"  # idempotent
    assert launcher.revoked == [stage.task_id]  # the repeat revoked nothing more


def test_resume_continues_from_first_stage_not_succeeded(session, launcher: RecordingLauncher) -> None:
    run = runs.create_run(session, small_config())
    first = lifecycle.launch_run(session, run.id, launcher)
    stages.claim_stage(session, first.id)
    stages.complete_stage(session, first.id)
    second = stages.next_stage(session, first.id)
    stages.claim_stage(session, second.id)
    stages.fail_stage(session, second.id, "out of memory")
    session.commit()
    assert runs.get_run(session, run.id).status == "failed"
    resumed = lifecycle.resume_run(session, run.id, launcher)
    assert resumed.status == "queued" and resumed.error is None and resumed.launched_at is not None
    assert launcher.sent[-1][:2] == ("generate", second.id)
    statuses = {s.name: s.status for s in stages.list_stages(session, run.id, iteration=0)}
    assert statuses["self_instruct"] == "succeeded" and statuses["generate"] == "queued"


def test_resume_and_cancel_refuse_invalid_transitions(session, launcher: RecordingLauncher) -> None:
    run = runs.create_run(session, small_config())
    session.commit()
    with pytest.raises(ConflictError):
        lifecycle.resume_run(session, run.id, launcher)  # queued, not failed/cancelled
    runs.mark_run_failed(session, run.id, "boom")
    session.commit()
    with pytest.raises(ConflictError):
        lifecycle.cancel_run(session, run.id, launcher)
    with pytest.raises(ConflictError):
        lifecycle.launch_run(session, run.id, launcher)
    assert launcher.sent == [] and launcher.revoked == []


def _finish(session, run_id: int) -> None:
    stage = runs.first_open_stage(session, run_id)
    while stage is not None:
        stages.claim_stage(session, stage.id)
        stages.complete_stage(session, stage.id)
        stage = stages.next_stage(session, stage.id)
    session.commit()


def test_sweep_concurrency_bound_and_launch_on_completion(session, launcher: RecordingLauncher) -> None:
    sweep = sweeps.create_sweep(session, "grid", small_config(iterations=1), GRID, max_concurrent=2)
    session.commit()
    children = [r.id for r in sweep.runs]
    assert len(children) == 6
    assert [r.config["objective"]["alpha"] for r in sweep.runs] == [0.03, 0.03, 0.05, 0.05, 0.07, 0.07]
    assert lifecycle.launch_waiting_sweep_runs(session, sweep.id, launcher) == children[:2]
    assert lifecycle.launch_waiting_sweep_runs(session, sweep.id, launcher) == []  # bound reached
    assert sweep.id in sweeps.sweeps_with_waiting_runs(session)
    _finish(session, children[0])
    assert lifecycle.launch_waiting_sweep_runs(session, sweep.id, launcher) == [children[2]]
    lifecycle.cancel_run(session, children[1], launcher)  # cancel frees a slot by itself
    assert len({sid for _, sid, _ in launcher.sent}) == 4
    assert sweeps.sweep_status_counts(session, sweep.id) == {"succeeded": 1, "cancelled": 1, "queued": 4}


def test_resumed_sweep_child_waits_for_a_free_slot(session, launcher: RecordingLauncher) -> None:
    sweep = sweeps.create_sweep(
        session, "wait", small_config(iterations=1), {"objective.alpha": [0.03, 0.05]}, max_concurrent=1
    )
    session.commit()
    first, second = (r.id for r in sweep.runs)
    assert lifecycle.launch_waiting_sweep_runs(session, sweep.id, launcher) == [first]
    lifecycle.cancel_run(session, first, launcher)  # its slot goes to the waiting sibling
    assert launcher.sent[-1][1] == runs.first_open_stage(session, second).id
    sent = len(launcher.sent)
    resumed = lifecycle.resume_run(session, first, launcher)
    assert resumed.status == "queued" and resumed.launched_at is None  # the slot is taken
    assert len(launcher.sent) == sent
