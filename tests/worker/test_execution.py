"""One stage attempt end to end, in-process, against a real SQLite store and filesystem broker.

The stage bodies are the small ones in `stage_bodies.py`, run in real child processes, so these
tests cover claim → supervise → record → enqueue-next without loading a model.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sqlalchemy import func, select

from backend.db import session_scope
from backend.lifecycle import cancel_run, launch_run, launch_waiting_sweep_runs
from backend.settings import Settings
from backend.store.metrics import metric_history
from backend.store.models import EvalSample, Metric, Pair, Run, Stage
from backend.store.stages import list_stages
from backend.store.sweeps import create_sweep
from worker.execution import execute_stage
from worker.stage_process import group_alive

from .conftest import drain_wakeups, new_run, tiny_config


def _launch(settings: Settings, launcher, run_id: int) -> tuple[str, int]:
    with session_scope() as session:
        launch_run(session, run_id, launcher)
    (wakeup,) = drain_wakeups(settings)
    return wakeup


def _execute(settings: Settings, launcher, task: str, stage_id: int, entry: str) -> str:
    stage = task.removeprefix("aipo.stage.")
    return execute_stage(stage_id, expected_stage=stage, task_id="t", settings=settings, launcher=launcher,
                         entry=entry)  # fmt: skip


def _stage(stage_id: int) -> Stage:
    with session_scope() as session:
        return session.get(Stage, stage_id)


def _run(run_id: int) -> Run:
    with session_scope() as session:
        return session.get(Run, run_id)


def _count(model, run_id: int) -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(model).where(model.run_id == run_id))


def test_success_records_stage_and_wakes_the_next(store: Settings, launcher) -> None:
    run_id = new_run()
    task, stage_id = _launch(store, launcher, run_id)
    assert task == "aipo.stage.self_instruct"
    assert _execute(store, launcher, task, stage_id, "tests.worker.stage_bodies:quick") == "succeeded"
    stage = _stage(stage_id)
    assert (stage.status, stage.attempt, stage.progress) == ("succeeded", 1, 1.0)
    assert stage.pid is not None and not group_alive(stage.pid)
    log = Path(stage.log_path).read_text()
    assert "stdout line from self_instruct" in log and "stderr line from self_instruct" in log
    with session_scope() as session:
        losses = session.execute(
            select(Metric.step, Metric.value).where(Metric.run_id == run_id, Metric.key == "loss")
        ).all()
    assert sorted(losses) == [(0, 1.0), (1, 0.5), (2, 1.0 / 3)]
    following = [s for s in list_stages_of(run_id) if s.name == "generate"][0]
    assert following.status == "queued"
    assert drain_wakeups(store) == [("aipo.stage.generate", following.id)]
    assert _run(run_id).status == "running"
    # A second delivery of the same wake-up (at-least-once broker) finds nothing to do.
    assert _execute(store, launcher, task, stage_id, "tests.worker.stage_bodies:quick") == "skipped"
    assert _stage(stage_id).attempt == 1
    assert drain_wakeups(store) == []


def list_stages_of(run_id: int) -> list[Stage]:
    with session_scope() as session:
        return list_stages(session, run_id)


def test_wakeup_for_another_stage_kind_is_dropped(store: Settings, launcher) -> None:
    run_id = new_run()
    _, stage_id = _launch(store, launcher, run_id)
    assert (
        _execute(store, launcher, "aipo.stage.train", stage_id, "tests.worker.stage_bodies:quick")
        == "skipped"
    )
    assert _stage(stage_id).status == "queued"


def test_error_in_stage_body_fails_stage_and_run(store: Settings, launcher) -> None:
    run_id = new_run()
    task, stage_id = _launch(store, launcher, run_id)
    assert _execute(store, launcher, task, stage_id, "tests.worker.stage_bodies:failing") == "failed"
    stage, run = _stage(stage_id), _run(run_id)
    assert stage.status == "failed" and stage.error == "ValueError: the judge refused to judge"
    assert run.status == "failed" and "the judge refused to judge" in run.error
    assert drain_wakeups(store) == []


def test_outputs_the_store_refuses_fail_the_stage_with_the_reason(store: Settings, launcher) -> None:
    """Not a crash to retry, nor a stage left running for the reconciler: the run fails, saying why."""
    run_id = new_run()
    pending, outcomes = [_launch(store, launcher, run_id)], {}
    while pending:
        task, stage_id = pending.pop(0)
        outcomes[task] = _execute(
            store, launcher, task, stage_id, "tests.worker.stage_bodies:unstorable_pairs"
        )
        pending.extend(drain_wakeups(store))
    assert outcomes == {
        "aipo.stage.self_instruct": "succeeded",
        "aipo.stage.generate": "succeeded",
        "aipo.stage.rank": "failed",
    }
    rank = next(s for s in list_stages_of(run_id) if s.name == "rank")
    assert rank.status == "failed" and "storing the stage's outputs failed" in rank.error
    assert "rejected" in rank.error and rank.attempt == 1
    assert _run(run_id).status == "failed" and _count(Pair, run_id) == 0


def test_crash_is_retried_until_the_budget_is_spent(store: Settings, launcher) -> None:
    settings = store.model_copy(update={"stage_max_attempts": 2})
    run_id = new_run()
    task, stage_id = _launch(settings, launcher, run_id)
    assert _execute(settings, launcher, task, stage_id, "tests.worker.stage_bodies:crashing") == "failed"
    stage = _stage(stage_id)
    assert (stage.status, stage.attempt) == ("queued", 1)
    assert "exited with status 7" in stage.error
    assert drain_wakeups(settings) == [(task, stage_id)]
    assert _execute(settings, launcher, task, stage_id, "tests.worker.stage_bodies:crashing") == "failed"
    stage = _stage(stage_id)
    assert stage.status == "failed" and stage.error.endswith("(after 2 attempts)")
    assert _run(run_id).status == "failed"
    assert Path(stage.log_path).read_text().count("about to crash") == 2


def test_a_retried_stage_logs_a_new_curve_and_history_shows_it(store: Settings, launcher) -> None:
    """Metrics are keyed by attempt: the retry's loss curve replaces the crashed one's in the
    history instead of mixing with it (steps 1-2 would otherwise keep the first value, 3-4 stay)."""
    run_id = new_run()
    task, stage_id = _launch(store, launcher, run_id)
    body = "tests.worker.stage_bodies:crash_once_while_training"
    assert _execute(store, launcher, task, stage_id, body) == "failed"
    assert drain_wakeups(store) == [(task, stage_id)]
    assert _execute(store, launcher, task, stage_id, body) == "succeeded"
    with session_scope() as session:
        stored = session.execute(
            select(Metric.attempt, Metric.step, Metric.value)
            .where(Metric.run_id == run_id, Metric.key == "loss")
            .order_by(Metric.attempt, Metric.step)
        ).all()
        total, history = metric_history(session, run_id, "loss")
    assert [tuple(r) for r in stored] == [(1, s, 1.0) for s in range(1, 5)] + [(2, 1, 2.0), (2, 2, 2.0)]
    assert total == 2
    assert [(p["attempt"], p["step"], p["value"]) for p in history] == [(2, 1, 2.0), (2, 2, 2.0)]


def test_cancel_kills_the_stage_process_group(store: Settings, launcher) -> None:
    pids = store.resolved_artifact_root / "pids"
    run_id = new_run()
    task, stage_id = _launch(store, launcher, run_id)
    outcome: list[str] = []
    thread = threading.Thread(
        target=lambda: outcome.append(
            _execute(store, launcher, task, stage_id, "tests.worker.stage_bodies:sleepy")
        )
    )
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not pids.exists():
            assert time.monotonic() < deadline, "stage child did not start"
            time.sleep(0.05)
        child, grandchild = map(int, pids.read_text().split())
        while _stage(stage_id).pid != child:  # stored by the next heartbeat
            assert time.monotonic() < deadline, "the child's pid never reached the store"
            time.sleep(0.05)
        with session_scope() as session:
            cancel_run(session, run_id, launcher)
        cancelled_at = time.monotonic()
        thread.join(timeout=15)
        assert not thread.is_alive() and outcome == ["stopped"]
        assert not group_alive(child) and time.monotonic() - cancelled_at < 10
        assert _stage(stage_id).status == "cancelled" and _run(run_id).status == "cancelled"
    finally:
        thread.join(timeout=15)


def test_whole_run_moves_through_every_stage_and_loads_rows_once(store: Settings, launcher) -> None:
    """Orchestration across two iterations; pairs, eval samples and summaries land in the store."""
    run_id = new_run(tiny_config(iterations=2))
    pending = [_launch(store, launcher, run_id)]
    order = []
    while pending:
        task, stage_id = pending.pop(0)
        assert _execute(store, launcher, task, stage_id, "tests.worker.stage_bodies:artifacts") == "succeeded"
        order.append((_stage(stage_id).iteration, task.removeprefix("aipo.stage.")))
        pending.extend(drain_wakeups(store))
    stages = ["self_instruct", "generate", "rank", "train", "evaluate"]
    assert order == [(k, s) for k in (0, 1) for s in stages]
    run = _run(run_id)
    assert run.status == "succeeded" and run.finished_at is not None
    assert _count(Pair, run_id) == 6 and _count(EvalSample, run_id) == 2 + 2 + 3  # θ_1, θ_2, θ_0
    with session_scope() as session:
        win_rates = session.execute(
            select(Metric.iteration, Metric.value).where(
                Metric.run_id == run_id, Metric.key == "alpaca_eval/win_rate", Metric.stage == "evaluate"
            )
        ).all()
        artifact = session.scalars(
            select(Stage.artifact_path).where(Stage.run_id == run_id, Stage.name == "rank")
        ).first()
        extras = session.scalars(
            select(Pair.extra).where(Pair.run_id == run_id, Pair.iteration == 1).order_by(Pair.idx)
        ).all()
        base_samples = session.execute(
            select(EvalSample.iteration, EvalSample.uid).where(
                EvalSample.run_id == run_id, EvalSample.evaluated == "base"
            )
        ).all()
    assert sorted(win_rates) == [(0, 50.0), (1, 50.0)]
    assert sorted(base_samples) == [(0, "e0"), (0, "e1"), (0, "e2")]
    assert artifact.endswith("iter_0/pairs.jsonl")
    # evaluate's per-pair diagnostics are merged into the pairs stored at rank
    assert [e["gradient_weight"] for e in extras] == [0.0, 0.25, 0.5]
    assert [e["s_theta"] for e in extras] == [0.0, 0.5, 1.0]


def test_a_finished_sweep_run_frees_its_slot(store: Settings, launcher) -> None:
    with session_scope() as session:
        sweep = create_sweep(session, "grid", tiny_config(), {"seed": [1, 2]}, max_concurrent=1)
        sweep_id = sweep.id
    with session_scope() as session:
        (first,) = launch_waiting_sweep_runs(session, sweep_id, launcher)
    (wakeup,) = drain_wakeups(store)
    assert _execute(store, launcher, *wakeup, "tests.worker.stage_bodies:failing") == "failed"
    assert _run(first).status == "failed"
    (second,) = drain_wakeups(store)
    with session_scope() as session:
        stage = session.get(Stage, second[1])
        assert stage.run_id != first and session.get(Run, stage.run_id).sweep_id == sweep_id
