"""The stage child re-checks the run config against the operator's loading policy before it loads.

The API refuses such configs already; these tests store one directly (as a stale config, or a
tightened allow-list, would reach a worker) and run the real pipeline entry in a real child.
"""

from __future__ import annotations

import json
from pathlib import Path

from aipo_core.access import ModelAccess
from aipo_core.config import RunConfig
from backend.db import session_scope
from backend.settings import Settings
from backend.store.models import Run, Stage
from worker.execution import execute_stage
from worker.stage_runner import execute

from .conftest import drain_wakeups, new_run


def _config(**overrides) -> RunConfig:
    return RunConfig.model_validate(
        {"name": "refused", "model": "tiny-random-llama", "iterations": 1, **overrides}
    )


def test_the_worker_refuses_a_hub_model_off_the_allow_list_before_loading(store: Settings, launcher) -> None:
    from backend.lifecycle import launch_run

    run_id = new_run(_config(model="evil/phi-2"))
    with session_scope() as session:
        launch_run(session, run_id, launcher)
    ((task, stage_id),) = drain_wakeups(store)
    outcome = execute_stage(
        stage_id, expected_stage="self_instruct", task_id="t", settings=store, launcher=launcher
    )
    assert outcome == "failed"
    with session_scope() as session:
        stage, run = session.get(Stage, stage_id), session.get(Run, run_id)
        assert "model: hub model 'evil/phi-2' is not on this server's allow-list" in stage.error
        assert run.status == "failed"
        log = Path(stage.log_path)
        spec = json.loads(log.with_name(f"{log.stem}.attempt-{stage.attempt}.spec.json").read_text())
    # The child got the operator's policy in its spec, and nothing of the run was written.
    assert ModelAccess.from_dict(spec["model_access"]) == store.model_access()
    assert not (
        store.resolved_artifact_root / "runs" / str(run_id) / "iter_0" / "instructions.jsonl"
    ).exists()


def test_the_stage_runner_refuses_paths_outside_the_data_roots(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    spec = {
        "stage": "self_instruct",
        "config": _config(prompt_pool="nosuchdir/../../../../../../../etc/passwd").model_dump(mode="json"),
        "artifact_root": str(tmp_path / "artifacts"),
        "run_id": "1",
        "iteration": 0,
        "events": str(tmp_path / "events.jsonl"),
        "result": str(tmp_path / "result.json"),
        "model_access": settings.model_access().to_dict(),
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    assert execute(str(tmp_path / "spec.json")) == 1
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["ok"] is False and "ConfigRefused" in result["error"]
    assert "prompt_pool: local path nosuchdir/../" in result["error"] and "/etc/passwd" in result["error"]


def test_a_summary_that_is_not_json_is_the_stages_error_not_a_crash(tmp_path: Path) -> None:
    """The result is written durably (aipo_core.artifacts) or not at all: an unserialisable
    summary becomes an error result, which the supervisor does not retry like a crash."""
    spec = {
        "entry": "tests.worker.stage_bodies:unserialisable",
        "stage": "rank",
        "config": _config().model_dump(mode="json"),
        "artifact_root": str(tmp_path / "artifacts"),
        "run_id": "1",
        "iteration": 0,
        "events": str(tmp_path / "events.jsonl"),
        "result": str(tmp_path / "result.json"),
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    assert execute(str(tmp_path / "spec.json")) == 1
    result = json.loads((tmp_path / "result.json").read_text())
    assert result == {"ok": False, "error": "TypeError: Object of type object is not JSON serializable"}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["events.jsonl", "result.json", "spec.json"]
