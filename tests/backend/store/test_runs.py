"""Runs in the store: planning, launching, listing, cancel and resume transitions."""

from __future__ import annotations

import pytest

from backend.routing import STAGES
from backend.store import runs, stages
from backend.store.errors import ConflictError
from tests.backend.conftest import RecordingLauncher, small_config


def test_create_run_plans_every_stage_pending(session) -> None:
    run = runs.create_run(session, small_config(iterations=3))
    session.commit()
    planned = stages.list_stages(session, run.id)
    assert [(s.iteration, s.name) for s in planned] == [(k, name) for k in range(3) for name in STAGES]
    assert {s.status for s in planned} == {"pending"}
    assert [s.position for s in planned] == list(range(15))
    assert run.status == "queued" and run.objective == "aipo"
    assert run.run_config().objective.alpha == 0.05


def test_launch_queues_first_stage_after_commit(session, launcher: RecordingLauncher) -> None:
    run = runs.create_run(session, small_config())
    stage = runs.launch_run(session, run.id, launcher)
    assert stage is not None and stage.name == "self_instruct" and stage.status == "queued"
    assert launcher.sent == [("self_instruct", stage.id, stage.task_id)]
    assert not session.in_transaction() or not session.dirty  # committed before sending
    assert runs.launch_run(session, run.id, launcher) is None  # already queued: nothing new


def test_cancel_marks_unfinished_stages_and_revokes(session, launcher: RecordingLauncher) -> None:
    run = runs.create_run(session, small_config())
    stage = runs.launch_run(session, run.id, launcher)
    stages.claim_stage(session, stage.id, task_id=stage.task_id)
    session.commit()
    cancelled = runs.cancel_run(session, run.id, launcher)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert launcher.revoked == [stage.task_id]
    assert {s.status for s in stages.list_stages(session, run.id)} == {"cancelled"}
    assert runs.is_run_cancelled(session, run.id)
    assert not stages.heartbeat(session, stage.id)
    assert runs.cancel_run(session, run.id, launcher).status == "cancelled"  # idempotent


def test_resume_continues_from_first_stage_not_succeeded(session, launcher: RecordingLauncher) -> None:
    run = runs.create_run(session, small_config())
    first = runs.launch_run(session, run.id, launcher)
    stages.claim_stage(session, first.id)
    stages.complete_stage(session, first.id)
    second = stages.next_stage(session, first.id)
    stages.claim_stage(session, second.id)
    stages.fail_stage(session, second.id, "out of memory")
    session.commit()
    assert runs.get_run(session, run.id).status == "failed"
    resumed = runs.resume_run(session, run.id, launcher)
    assert resumed.status == "queued" and resumed.error is None
    assert launcher.sent[-1][:2] == ("generate", second.id)
    statuses = {s.name: s.status for s in stages.list_stages(session, run.id, iteration=0)}
    assert statuses["self_instruct"] == "succeeded" and statuses["generate"] == "queued"


def test_resume_and_cancel_refuse_invalid_transitions(session, launcher: RecordingLauncher) -> None:
    run = runs.create_run(session, small_config())
    session.commit()
    with pytest.raises(ConflictError):
        runs.resume_run(session, run.id, launcher)  # queued, not failed/cancelled
    runs.mark_run_failed(session, run.id, "boom")
    session.commit()
    with pytest.raises(ConflictError):
        runs.cancel_run(session, run.id, launcher)


def test_list_runs_filters_and_paginates(session) -> None:
    tag = "listtag"
    for i in range(5):
        runs.create_run(
            session, small_config(name=f"{tag}-{i}", objective={"name": "dpo" if i % 2 else "aipo"})
        )
    session.commit()
    page, total = runs.list_runs(session, name=tag.upper(), limit=2)
    assert total == 5 and [r.name for r in page] == [f"{tag}-4", f"{tag}-3"]
    dpo, total_dpo = runs.list_runs(session, name=tag, objective="dpo")
    assert total_dpo == 2 and {r.name for r in dpo} == {f"{tag}-1", f"{tag}-3"}
    assert runs.list_runs(session, name="50%_no_such")[1] == 0  # LIKE wildcards are escaped


def test_run_progress_counts_done_stages(session, launcher: RecordingLauncher) -> None:
    run = runs.create_run(session, small_config(iterations=1))
    stage = runs.launch_run(session, run.id, launcher)
    stages.claim_stage(session, stage.id)
    stages.complete_stage(session, stage.id)
    session.commit()
    progress = runs.run_progress(session, [run.id])[run.id]
    assert (progress.done, progress.total, progress.current_stage) == (1, 5, "generate")
