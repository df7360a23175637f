"""The stage state machine: guards, fencing, run completion/failure, stale detection."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from backend.lifecycle import launch_run
from backend.store import runs, stages
from backend.store.models import Stage, utcnow
from tests.backend.conftest import RecordingLauncher, small_config


def launched(session, launcher, **config):
    run = runs.create_run(session, small_config(**config))
    return run, launch_run(session, run.id, launcher)


def test_claim_is_exclusive_and_increments_attempt(session, launcher: RecordingLauncher) -> None:
    run, stage = launched(session, launcher)
    claimed = stages.claim_stage(session, stage.id, task_id="t1", log_path="/tmp/x.log")
    assert claimed is not None and claimed.attempt == 1 and claimed.status == "running"
    assert claimed.log_path == "/tmp/x.log"
    assert stages.claim_stage(session, stage.id) is None  # duplicate delivery finds nothing to do
    session.commit()
    assert runs.get_run(session, run.id).status == "running"


def test_stale_running_stage_can_be_reclaimed_and_old_attempt_is_fenced(session, launcher) -> None:
    _, stage = launched(session, launcher)
    first_attempt = stages.claim_stage(session, stage.id).attempt
    assert stages.claim_stage(session, stage.id, stale_after_s=60) is None  # heartbeat is fresh
    session.execute(
        update(Stage).where(Stage.id == stage.id).values(heartbeat_at=utcnow() - timedelta(hours=1))
    )
    second = stages.claim_stage(session, stage.id, stale_after_s=60)
    assert second is not None and second.attempt == first_attempt + 1 == 2
    assert not stages.heartbeat(session, stage.id, attempt=1)  # the presumed-dead worker must stop
    assert stages.heartbeat(session, stage.id, attempt=2, progress=1.7, message="m", pid=4242)
    session.commit()
    refreshed = stages.get_stage(session, stage.id)
    assert (refreshed.progress, refreshed.message, refreshed.pid) == (1.0, "m", 4242)
    assert stages.complete_stage(session, stage.id, attempt=1) is None


def test_completing_every_stage_succeeds_the_run(session, launcher: RecordingLauncher) -> None:
    run, stage = launched(session, launcher, iterations=1)
    while stage is not None:
        assert stages.claim_stage(session, stage.id) is not None
        done = stages.complete_stage(session, stage.id, artifact_path=f"/a/{stage.name}")
        assert done.status == "succeeded" and done.progress == 1.0
        stage = stages.next_stage(session, stage.id)
    session.commit()
    finished = runs.get_run(session, run.id)
    assert finished.status == "succeeded" and finished.finished_at is not None
    assert finished.iterations[0].finished_at is not None


def test_skipped_stages_count_as_done(session, launcher: RecordingLauncher) -> None:
    run, stage = launched(session, launcher, iterations=1)
    for s in stages.list_stages(session, run.id):
        assert stages.skip_stage(session, s.id, reason="initial_pairs given") is not None
    session.commit()
    assert runs.get_run(session, run.id).status == "succeeded"
    assert stages.next_stage(session, stage.id) is None


def test_fail_stage_fails_the_run_with_the_error(session, launcher: RecordingLauncher) -> None:
    run, stage = launched(session, launcher)
    stages.claim_stage(session, stage.id)
    failed = stages.fail_stage(session, stage.id, "CUDA OOM")
    session.commit()
    assert failed.status == "failed"
    assert "CUDA OOM" in runs.get_run(session, run.id).error
    assert stages.fail_stage(session, stage.id, "again") is None


def test_queue_requeue_retry_commit_then_send(session, launcher: RecordingLauncher) -> None:
    _, stage = launched(session, launcher)
    assert stages.queue_stage(session, stage.id, launcher) is None  # not pending any more
    first_task = stage.task_id
    requeued = stages.requeue_stage(session, stage.id, launcher)
    assert requeued is not None and requeued.task_id != first_task
    assert launcher.sent[-1] == ("self_instruct", stage.id, requeued.task_id)
    claimed = stages.claim_stage(session, stage.id)
    retried = stages.retry_stage(session, stage.id, launcher, error="child crashed", attempt=claimed.attempt)
    assert retried.status == "queued" and retried.error == "child crashed"
    nxt = stages.next_stage(session, stage.id)
    assert stages.queue_stage(session, nxt.id, launcher).status == "queued"


def test_stale_stages_lists_old_heartbeats_and_unclaimed_queued(session, launcher: RecordingLauncher) -> None:
    _, running = launched(session, launcher)
    stages.claim_stage(session, running.id)
    _, queued = launched(session, launcher)
    old = utcnow() - timedelta(minutes=10)
    session.execute(update(Stage).where(Stage.id == running.id).values(heartbeat_at=old))
    session.execute(update(Stage).where(Stage.id == queued.id).values(queued_at=old))
    session.commit()
    ids = {s.id for s in stages.stale_stages(session, heartbeat_timeout_s=60, queued_timeout_s=60)}
    assert {running.id, queued.id} <= ids
    ids_without_queued = {s.id for s in stages.stale_stages(session, heartbeat_timeout_s=60)}
    assert running.id in ids_without_queued and queued.id not in ids_without_queued
    stages.requeue_stage(session, queued.id, launcher)  # refreshes queued_at
    assert queued.id not in {
        s.id for s in stages.stale_stages(session, heartbeat_timeout_s=60, queued_timeout_s=60)
    }


def test_stage_log_path_layout(tmp_path) -> None:
    assert (
        stages.stage_log_path(tmp_path, 3, 1, "train")
        == tmp_path / "runs" / "3" / "logs" / "iter_1_train.log"
    )
