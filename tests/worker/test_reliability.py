"""Reliability of real deployments: real API, real Celery workers, the real pipeline (tiny model).

Runs are submitted over HTTP and executed by `celery worker` processes started exactly as
`aipo up` starts them. PostgreSQL + Redis tests skip when the services are unreachable, unless
AIPO_REQUIRE_SERVICES=1 (then they fail).
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from sqlalchemy import select
from sqlalchemy.engine import make_url

from aipo_cli.api import ApiClient
from aipo_cli.demo import follow_run, iterations_table
from aipo_core.artifacts import iteration_dir, read_jsonl
from backend.db import dispose_engines, session_scope
from backend.settings import get_settings
from backend.store.metrics import metric_history
from backend.store.models import EvalSample, Iteration, Pair, Stage
from worker.stage_process import group_alive

from .harness import (
    TERMINAL,
    TINY_RUN,
    DeathWatch,
    deployment,
    get_run,
    kill_group,
    postgres_database,
    private_redis,
    redis_database,
    submit,
    wait_for_status,
    wait_until,
)
from .tcp_proxy import TcpProxy

RUN_TIMEOUT_S = 240


def _stages(run_id: int) -> list[Stage]:
    with session_scope() as session:
        return list(session.scalars(select(Stage).where(Stage.run_id == run_id).order_by(Stage.position)))


def _running(run_id: int, name: str | None = None) -> Stage | None:
    """The run's stage that is running with its child started (pid recorded), if any."""
    for stage in _stages(run_id):
        if stage.status == "running" and stage.pid and (name is None or stage.name == name):
            return stage
    return None


def assert_complete_without_duplicates(run_id: int, artifact_root: Path, iterations: int) -> None:
    """Every stage succeeded once; DB rows mirror the artifacts exactly once per iteration."""
    stages = _stages(run_id)
    assert [(s.iteration, s.name, s.status) for s in stages] == [
        (k, name, "succeeded") for k in range(iterations)
        for name in ("self_instruct", "generate", "rank", "train", "evaluate")
    ]  # fmt: skip
    with session_scope() as session:
        assert session.scalar(select(Iteration.index).where(Iteration.run_id == run_id).order_by(
            Iteration.index.desc())) == iterations - 1  # fmt: skip
        assert (
            len(session.scalars(select(Iteration.id).where(Iteration.run_id == run_id)).all()) == iterations
        )
        for k in range(iterations):
            folder = iteration_dir(artifact_root, str(run_id), k)
            expected = [p["id"] for p in read_jsonl(folder / "pairs.jsonl")]
            stored = session.scalars(
                select(Pair.uid).where(Pair.run_id == run_id, Pair.iteration == k).order_by(Pair.idx)
            ).all()
            assert list(stored) == [str(uid) for uid in expected]
            for evaluated, path in (("policy", "alpaca_eval.jsonl"), ("base", "base/alpaca_eval.jsonl")):
                samples = session.scalars(
                    select(EvalSample.uid).where(
                        EvalSample.run_id == run_id,
                        EvalSample.iteration == k,
                        EvalSample.evaluated == evaluated,
                    )
                ).all()
                expected_samples = 2 if evaluated == "policy" or k == 0 else 0  # θ_0: iteration 0 only
                assert len(samples) == expected_samples
                if expected_samples:
                    assert len(read_jsonl(folder / "eval" / path)) == expected_samples
            # A retried train stage keeps each attempt's curve apart; history shows the last one's.
            train = next(s for s in stages if s.iteration == k and s.name == "train")
            _, curve = metric_history(session, run_id, "loss", iteration=k, stage="train", points=10_000)
            steps = [p["step"] for p in curve]
            assert steps and steps == sorted(set(steps)), "train loss curve"
            assert {p["attempt"] for p in curve} == {train.attempt}


def _config(**changes: Any) -> dict[str, Any]:
    return {**TINY_RUN, **changes}


@pytest.mark.services
def test_sigkilled_worker_during_training_run_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (
        postgres_database() as database,
        redis_database() as broker,
        deployment(tmp_path, monkeypatch, database_url=database, broker_url=broker) as dep,
    ):
        run_id = submit(dep, _config(name="kill-worker"))
        train = wait_until(lambda: _running(run_id, "train"), timeout_s=RUN_TIMEOUT_S, what="train", dep=dep)
        worker = dep.stack.service("worker-0")
        kill_group(worker.process.pid)
        worker.process.wait()
        # The orphaned stage child notices its supervisor is gone and kills its own group.
        wait_until(lambda: not group_alive(train.pid), timeout_s=10, what="orphaned stage to exit", dep=dep)
        dep.start_worker("worker-1")
        run = wait_for_status(dep, run_id, TERMINAL, timeout_s=RUN_TIMEOUT_S)
        assert run["status"] == "succeeded", run
        assert_complete_without_duplicates(run_id, dep.stack.home, iterations=1)
        assert next(s for s in _stages(run_id) if s.name == "train").attempt == 2


@pytest.mark.services
def test_cancel_kills_stage_group_and_resume_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (
        postgres_database() as database,
        redis_database() as broker,
        deployment(tmp_path, monkeypatch, database_url=database, broker_url=broker) as dep,
    ):
        run_id = submit(dep, _config(name="cancel-resume"))
        stage = wait_until(lambda: _running(run_id, "rank"), timeout_s=RUN_TIMEOUT_S, what="rank", dep=dep)
        with dep.client as client:
            assert client.post(f"/runs/{run_id}/cancel").status_code == 200
        wait_until(lambda: not group_alive(stage.pid), timeout_s=10, what="stage group to die", dep=dep)
        assert get_run(dep, run_id)["status"] == "cancelled"
        with dep.client as client:
            assert client.post(f"/runs/{run_id}/resume").status_code == 200
        run = wait_for_status(dep, run_id, TERMINAL, timeout_s=RUN_TIMEOUT_S)
        assert run["status"] == "succeeded", run
        assert_complete_without_duplicates(run_id, dep.stack.home, iterations=1)


def _full_run(dep: Any, during: Callable[[int], None] | None = None) -> None:
    run_id = submit(dep, _config(name="two-iterations", iterations=2))
    if during is not None:
        during(run_id)
    run = wait_for_status(dep, run_id, TERMINAL, timeout_s=2 * RUN_TIMEOUT_S)
    assert run["status"] == "succeeded", run
    assert_complete_without_duplicates(run_id, dep.stack.home, iterations=2)
    with dep.client as client:
        iterations = client.get(f"/runs/{run_id}/iterations").json()["items"]
        train = next(s for s in client.get(f"/runs/{run_id}/stages").json()["items"] if s["name"] == "train")
        log = client.get(f"/runs/{run_id}/stages/{train['id']}/log").text
    assert [it["index"] for it in iterations] == [0, 1]
    for it in iterations:
        assert it["status"] == "succeeded"
        assert it["eval_metrics"]["alpaca_eval/win_rate"] is not None
        assert it["pair_stats"]["pairs"] > 0
    assert "stage train of run" in log and "stage train: done" in log
    _check_cli_summary(dep, run_id)


def _check_cli_summary(dep: Any, run_id: int) -> None:
    """What `aipo demo` prints after a run, read through the CLI's own API client."""
    client = ApiClient(dep.stack.api_url, dep.stack.token)
    out = io.StringIO()
    console = Console(file=out, width=200)
    assert follow_run(client, run_id, console, poll_s=0.1)["status"] == "succeeded"
    console.print(iterations_table(client.iterations(run_id)))
    rows = [line for line in out.getvalue().splitlines() if line.startswith("│")]
    assert [row.split("│")[1].strip() for row in rows] == ["θ_0 (base)", "θ_1", "θ_2"]
    assert [row.split("│")[2].strip() for row in rows] == ["–", "0", "1"]
    assert all("–" not in row.split("│")[5] for row in rows), "every evaluated model has a win rate"


def test_two_iteration_run_embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with deployment(tmp_path, monkeypatch) as dep:
        _full_run(dep)


@pytest.mark.services
def test_two_iteration_run_postgres_redis_survives_redis_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The services deployment end to end; Redis restarts (losing every message) mid-run.

    The Redis restarted is a private server of this test's own, never the shared one."""

    def restart_during_generate(run_id: int) -> None:
        wait_until(lambda: _running(run_id, "generate"), timeout_s=RUN_TIMEOUT_S, what="generate", dep=dep)
        redis.restart(down_s=2.0)

    with (
        postgres_database() as database,
        private_redis(tmp_path / "redis") as redis,
        deployment(tmp_path, monkeypatch, database_url=database, broker_url=redis.url) as dep,
    ):
        _full_run(dep, during=restart_during_generate)


def _train_attempt(run_id: int, attempt: int) -> Stage | None:
    """The run's train stage once `attempt` runs it with its child started."""
    stage = _running(run_id, "train")
    return stage if stage is not None and stage.attempt == attempt else None


@pytest.mark.services
def test_database_cut_off_mid_training_leaves_one_train_attempt_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real Celery workers. worker-0 (and the API) reach PostgreSQL through a TCP proxy, cut while
    train runs for longer than the heartbeat timeout; worker-1, started then, reaches it directly.
    worker-0 must stop its train child before worker-1 may claim the stage; the run then
    completes, with the train stage's second attempt's curve the one shown."""
    # The first attempt must still be training when its lease (6 s) runs out: steps take 0.05 s on
    # a quiet 2-core machine (120 steps once ended before the lease, so its path went untested) and
    # up to 1 s under load, so 300 steps outlast the lease and still finish within the run timeout.
    training = {**TINY_RUN["training"], "max_steps": 300}
    with postgres_database() as direct, redis_database() as broker:
        url = make_url(direct)
        proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
        proxied = url.set(port=proxy.port).render_as_string(hide_password=False)
        try:
            with deployment(tmp_path, monkeypatch, database_url=proxied, broker_url=broker) as dep:
                monkeypatch.setenv("AIPO_DATABASE_URL", direct)  # this test looks on directly
                get_settings.cache_clear()
                dispose_engines()
                run_id = submit(dep, _config(name="db-outage", training=training))
                first = wait_until(
                    lambda: _running(run_id, "train"), timeout_s=RUN_TIMEOUT_S, what="train", dep=dep
                )
                watch = DeathWatch(first.pid)
                watch.start()
                proxy.cut()
                cut_at = time.time()
                dep.start_worker("worker-1", AIPO_DATABASE_URL=direct)
                second = wait_until(
                    lambda: _train_attempt(run_id, 2),
                    timeout_s=RUN_TIMEOUT_S,
                    what="train attempt 2",
                    dep=dep,
                )
                watch.join(timeout=30)
                proxy.restore()
                run = wait_for_status(dep, run_id, TERMINAL, timeout_s=2 * RUN_TIMEOUT_S)
                worker_0_log = (dep.stack.home / "logs" / "worker-0.log").read_text(errors="replace")
        finally:
            proxy.close()
        assert run["status"] == "succeeded", run
        claimed_at = second.started_at.timestamp()
        assert watch.died_at is not None and watch.died_at < claimed_at, (watch.died_at, claimed_at)
        assert second.pid != first.pid
        assert "no heartbeat reached the store" in worker_0_log
        assert_complete_without_duplicates(run_id, dep.stack.home, iterations=1)
        assert next(s for s in _stages(run_id) if s.name == "train").attempt == 2
        print(
            f"\nworker-0's train child stopped {watch.died_at - cut_at:.2f} s after the cut; "
            f"worker-1 claimed train {claimed_at - cut_at:.2f} s after it"
        )
