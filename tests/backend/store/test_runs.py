"""Runs in the store: planning, listing, progress (launch/cancel/resume: tests/backend/test_lifecycle.py)."""

from __future__ import annotations

from backend.lifecycle import launch_run
from backend.routing import STAGES
from backend.store import runs, stages
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
    stage = launch_run(session, run.id, launcher)
    stages.claim_stage(session, stage.id)
    stages.complete_stage(session, stage.id)
    session.commit()
    progress = runs.run_progress(session, [run.id])[run.id]
    assert (progress.done, progress.total, progress.current_stage) == (1, 5, "generate")
