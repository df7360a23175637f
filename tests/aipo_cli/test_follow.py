"""`aipo submit --wait` against a real embedded stack (API + Celery worker, tiny model): without a
terminal, one plain line per stage transition on stderr; the final run as JSON on stdout; exit 0
when the run succeeded, 1 when it failed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from aipo_cli.main import app
from aipo_core.pipeline import STAGES
from tests.aipo_cli.test_progress import transitions
from tests.worker.harness import TINY_RUN, deployment


def submit_and_wait(dep, path: Path):
    args = ["submit", str(path), "--api", dep.stack.api_url, "--token", dep.stack.token, "--wait"]
    return CliRunner().invoke(app, args)


def test_submit_wait_follows_the_run_to_its_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(yaml.safe_dump(TINY_RUN))
    # Random weights never reach EOS: without the cut-off candidates no pair survives and train fails.
    no_pairs = {
        **TINY_RUN,
        "name": "no-pairs",
        "generation": {**TINY_RUN["generation"], "keep_unfinished": False},
    }
    bad.write_text(yaml.safe_dump(no_pairs))
    with deployment(tmp_path, monkeypatch) as dep:
        succeeded = submit_and_wait(dep, good)
        failed = submit_and_wait(dep, bad)

    assert succeeded.exit_code == 0, succeeded.output
    final = json.loads(succeeded.stdout)
    assert final["status"] == "succeeded" and final["name"] == TINY_RUN["name"]
    lines = transitions(succeeded.stderr)
    ended = [(k, stage) for k, stage, status, _ in lines if status == "succeeded"]
    assert ended == [(0, stage) for stage in STAGES]  # every stage ends once, in order
    assert len(lines) == len(set(lines)) and {status for _, _, status, _ in lines} <= {"running", "succeeded"}
    metrics = {stage: rest for _, stage, status, rest in lines if status == "succeeded"}
    assert re.fullmatch(r"\d+ pairs, agreement \d\.\d\d", metrics["rank"])
    assert re.fullmatch(r"loss \d+\.\d{4}, 2 steps", metrics["train"])
    assert re.fullmatch(r"alpaca_eval win rate \d+\.\d ± \d+\.\d %", metrics["evaluate"])
    assert re.search(rf"run {final['id']} succeeded after \d+:\d\d$", succeeded.stderr.strip())
    assert "━" not in succeeded.stderr  # no live bar in a log

    assert failed.exit_code == 1, failed.output
    assert json.loads(failed.stdout)["status"] == "failed"
    last = transitions(failed.stderr)[-1]
    assert last[:3] == (0, "train", "failed") and "no preference pairs survived" in last[3]
