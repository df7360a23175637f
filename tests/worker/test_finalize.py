"""Recording a finished attempt: a fenced-out attempt keeps nothing (SQLite and PostgreSQL).

The interleaving is the one the worker cannot prevent: the attempt's child finished and left
its outputs in its scratch folder, but before its supervisor records them, another worker has
taken the stage over (its heartbeat was late). The record must find that out FIRST and keep
nothing: no pairs, no metrics, no published files, no next stage.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from aipo_core import artifacts
from backend.db import session_scope
from backend.launcher import CeleryLauncher
from backend.lifecycle import launch_run
from backend.settings import Settings
from backend.store.models import Metric, Pair, Stage, utcnow
from backend.store.stages import claim_stage, list_stages
from worker.claimed import ClaimedStage
from worker.finalize import record_success

from .conftest import drain_wakeups, new_run, tiny_config
from .stage_bodies import _pair


def _rank_stage(settings: Settings, launcher: CeleryLauncher) -> int:
    """Iteration 0's rank stage, queued (its earlier stages done)."""
    config = tiny_config()
    run_id = new_run(config)
    with session_scope() as session:
        launch_run(session, run_id, launcher)
        stage_id = next(s.id for s in list_stages(session, run_id) if s.name == "rank")
        session.execute(
            update(Stage)
            .where(Stage.run_id == run_id, Stage.name.in_(("self_instruct", "generate")))
            .values(status="succeeded")
        )
        session.execute(update(Stage).where(Stage.id == stage_id).values(status="queued"))
    drain_wakeups(settings)
    return stage_id


def _claim(stage_id: int, *, stale_after_s: float | None = None) -> ClaimedStage:
    with session_scope() as session:
        stage = claim_stage(session, stage_id, stale_after_s=stale_after_s)
        assert stage is not None
        return ClaimedStage(
            stage.id,
            stage.run_id,
            stage.iteration,
            stage.name,
            stage.attempt,
            dict(stage.run.config),
            Path("x"),
        )


def _finished_attempt(root: Path, claimed: ClaimedStage) -> dict:
    """What the attempt's child left: pairs and the completion marker in its scratch folder."""
    scratch = artifacts.scratch_dir(root, str(claimed.run_id), 0, "rank", claimed.attempt)
    artifacts.write_jsonl_atomic(scratch / "pairs.jsonl", [_pair(i) for i in range(3)])
    summary = {"pairs": 3, "agreement_rate": 0.0}
    artifacts.write_json_atomic(scratch / "stage_rank.json", summary)
    return summary


def _take_over(stage_id: int) -> ClaimedStage:
    """Another worker claims the stage because the first one's heartbeat looks expired."""
    with session_scope() as session:
        session.execute(
            update(Stage).where(Stage.id == stage_id).values(heartbeat_at=utcnow().replace(year=2000))
        )
    return _claim(stage_id, stale_after_s=60)


def _count(model, run_id: int) -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(model).where(model.run_id == run_id))


def _stage(stage_id: int) -> Stage:
    with session_scope() as session:
        return session.get(Stage, stage_id)


@pytest.mark.parametrize("skipped", [False, True], ids=["completed", "skipped"])
def test_a_fenced_out_attempt_keeps_nothing(any_store: Settings, skipped: bool) -> None:
    launcher = CeleryLauncher(any_store)
    root = any_store.resolved_artifact_root
    stage_id = _rank_stage(any_store, launcher)
    first = _claim(stage_id)
    summary = _finished_attempt(root, first)
    if skipped:  # a stage that skips (initial_pairs) is fenced the same way
        summary["skipped"] = "initial_pairs"
    second = _take_over(stage_id)
    assert second.attempt == first.attempt + 1
    assert record_success(first, summary, artifact_root=root, launcher=launcher) is False
    published = artifacts.iteration_dir(root, str(first.run_id), 0)
    assert not (published / "pairs.jsonl").exists() and not (published / "stage_rank.json").exists()
    assert _count(Pair, first.run_id) == 0 and _count(Metric, first.run_id) == 0
    stage = _stage(stage_id)
    assert (stage.status, stage.attempt) == ("running", second.attempt)
    assert drain_wakeups(any_store) == [], "the next stage must not be queued"


def test_the_attempt_holding_the_stage_publishes_and_stores_once(any_store: Settings) -> None:
    launcher = CeleryLauncher(any_store)
    root = any_store.resolved_artifact_root
    stage_id = _rank_stage(any_store, launcher)
    first = _claim(stage_id)
    _finished_attempt(root, first)  # killed before recording: its scratch folder stays behind
    second = _take_over(stage_id)
    summary = _finished_attempt(root, second)
    assert record_success(second, summary, artifact_root=root, launcher=launcher) is True
    published = artifacts.iteration_dir(root, str(second.run_id), 0)
    assert [p["id"] for p in artifacts.read_jsonl(published / "pairs.jsonl")] == ["p0", "p1", "p2"]
    assert artifacts.read_json(published / "stage_rank.json") == summary
    assert not (published / artifacts.ATTEMPTS_DIR).exists(), "the dead attempt's folder is cleaned up"
    assert _count(Pair, second.run_id) == 3
    with session_scope() as session:
        attempts = set(session.scalars(select(Metric.attempt).where(Metric.run_id == second.run_id)))
    assert attempts == {second.attempt}
    stage = _stage(stage_id)
    assert (stage.status, stage.artifact_path) == ("succeeded", str(published / "pairs.jsonl"))
    assert [task for task, _ in drain_wakeups(any_store)] == ["aipo.stage.train"]
    # The superseded attempt, recording late, changes nothing.
    assert record_success(first, summary, artifact_root=root, launcher=launcher) is False
    assert _count(Pair, second.run_id) == 3
