"""Progress without a terminal: one plain line per stage transition; live bars only on a TTY."""

from __future__ import annotations

import io
import json
import os
import re

from rich.console import Console
from typer.testing import CliRunner

from aipo_cli.main import app
from aipo_cli.progress import LiveReporter, PlainReporter, StageEvent, clock, key_metric, make_reporter
from aipo_core.pipeline import STAGES
from tests.worker.harness import TINY_RUN

LINE = re.compile(r"^\[\s*(\d+:\d\d)\] iter (\d+)\s+(\w+)\s+(\w+)\s*(\d+:\d\d)?\s*(.*)$")


def transitions(text: str) -> list[tuple[int, str, str, str]]:
    """(iteration, stage, status, rest) of every transition line in `text`."""
    found = []
    for line in text.splitlines():
        match = LINE.match(line)
        if match:
            found.append((int(match[2]), match[3], match[4], match[6]))
    return found


def test_a_local_run_without_a_terminal_prints_one_line_per_stage_transition(tmp_path) -> None:
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_RUN))
    result = CliRunner().invoke(
        app, ["run", str(config), "--local", "--home", str(tmp_path / "home"), "--run-id", "t"]
    )
    assert result.exit_code == 0, result.output
    lines = transitions(result.stdout)
    assert [(k, stage, status) for k, stage, status, _ in lines] == [
        (0, stage, status) for stage in STAGES for status in ("running", "succeeded")
    ]
    ended = {stage: rest for _, stage, status, rest in lines if status == "succeeded"}
    assert re.fullmatch(r"4 instructions(, \d from the pool)?", ended["self_instruct"])
    assert re.fullmatch(r"4 prompts, \d+ candidates cut off", ended["generate"])
    assert re.fullmatch(r"\d+ pairs, agreement \d\.\d\d", ended["rank"])
    assert re.fullmatch(r"loss \d+\.\d{4}, 2 steps", ended["train"])
    assert re.fullmatch(r"alpaca_eval win rate \d+\.\d ± \d+\.\d %", ended["evaluate"])
    assert "\x1b[" not in result.stdout and "━" not in result.stdout.split("Per-iteration")[0]  # no bar
    # Resuming the same id: every stage is already complete and says so at once.
    again = CliRunner().invoke(
        app, ["run", str(config), "--local", "--home", str(tmp_path / "home"), "--run-id", "t"]
    )
    assert [status for _, _, status, _ in transitions(again.stdout)] == ["running", "succeeded"] * len(STAGES)


def test_a_failing_stage_is_its_own_line_before_the_error(tmp_path) -> None:
    """No candidate reaches EOS with random weights: no pair survives, so train fails."""
    config = tmp_path / "tiny.json"
    config.write_text(
        json.dumps({**TINY_RUN, "generation": {**TINY_RUN["generation"], "keep_unfinished": False}})
    )
    result = CliRunner().invoke(app, ["run", str(config), "--local", "--home", str(tmp_path / "home")])
    lines = transitions(result.stdout)
    assert lines[-1][:3] == (0, "train", "failed") and "no preference pairs survived" in lines[-1][3]
    # Like a failed run over HTTP: exit 1, the reason, and where the traceback was kept.
    assert result.exit_code == 1 and "Traceback" not in result.output
    log = tmp_path / "home" / "runs" / "tiny-reliability-local" / "logs" / "local-iter_0_train.log"
    assert result.stderr.splitlines() == [
        "error: iteration 0: train failed: iteration 0: no preference pairs survived ranking and filtering "
        "(counts per reason in stage_rank.json); raise self_instruct.num_instructions or "
        "generation.num_candidates, or generation.max_new_tokens when candidates are cut off before EOS "
        "(dropped_unfinished)",
        f"hint: the traceback is in {log}; `aipo --debug run …` prints it",
    ]
    assert "Traceback" in log.read_text() and "ValueError" in log.read_text()


def test_plain_lines_and_key_metrics() -> None:
    out = io.StringIO()
    reporter = PlainReporter(Console(file=out))
    reporter.transition(StageEvent(1, "rank", "succeeded", 83.4, {"pairs": 8, "agreement_rate": 0.625}))
    reporter.transition(StageEvent(1, "train", "failed", 5, error="CUDA out of memory"))
    first, second = out.getvalue().splitlines()
    assert re.fullmatch(r"\[\s*0:00\] iter 1  rank\s+succeeded\s+1:23  8 pairs, agreement 0\.62", first)
    assert re.fullmatch(r"\[\s*0:00\] iter 1  train\s+failed\s+0:05  CUDA out of memory", second)
    assert key_metric("evaluate", {"mt_bench/win_rate": 51.25, "mt_bench/win_rate_se": 2.0}, "mt_bench") == (
        "mt_bench win rate 51.2 ± 2.0 %"
    )
    assert key_metric("train", {"train_loss": 0.69314, "steps": 12.0}) == "loss 0.6931, 12 steps"
    assert key_metric("train", {"train_loss": 0.69, "steps": 1.0, "learning_rate_max": 0.0}) == (
        "loss 0.6900, 1 steps, learning rate 0 at every step: the policy did not change"
    )
    updated = {"train_loss": 0.69, "steps": 1.0, "learning_rate_max": 5e-6}
    assert key_metric("train", updated) == "loss 0.6900, 1 steps"
    assert key_metric("generate", {"skipped": "initial_pairs"}) == "skipped: initial_pairs"
    assert key_metric("rank", {}) == ""
    assert [clock(s) for s in (0, 59.6, 61, 3725, None)] == ["0:00", "1:00", "1:01", "1:02:05", ""]


def test_the_live_bar_is_for_terminals_only() -> None:
    assert isinstance(make_reporter(Console(file=io.StringIO())), PlainReporter)
    leader, follower = os.openpty()
    with os.fdopen(follower, "w") as tty:
        reporter = make_reporter(Console(file=tty), total_stages=5)
        try:
            assert isinstance(reporter, LiveReporter)
        finally:
            reporter.close()
    os.close(leader)


def test_a_long_stage_gets_a_progress_line_at_most_once_a_minute(monkeypatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("aipo_cli.progress.time.monotonic", lambda: now[0])
    out = io.StringIO()
    reporter = PlainReporter(Console(file=out))
    reporter.transition(StageEvent(0, "generate", "running"))
    reporter.update(0.25, "generate: 2/8 prompts")  # too soon after the transition line
    now[0] += 61
    reporter.update(0.5, "generate: 4/8 prompts")
    reporter.update(0.75, "generate: 6/8 prompts")  # too soon after the last line
    now[0] += 61
    reporter.update(0.5, "generate: 4/8 prompts")  # unchanged since the last line: nothing new
    reporter.transition(StageEvent(0, "generate", "succeeded", 122, {"prompts": 8}))
    now[0] += 61
    reporter.update(1.0, "generate done")  # no stage is running
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and transitions(out.getvalue())[1][2] == "succeeded"
    assert re.fullmatch(r"\[\s*1:01\] iter 0  generate\s+…\s+50%  generate: 4/8 prompts", lines[1])
