"""`aipo run CONFIG --local`: Algorithm 1 in this process, with progress and a summary table."""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any

from rich.console import Console

from aipo_cli.errors import RunFailed, as_user_error
from aipo_cli.progress import ProgressReporter, StageEvent, make_reporter
from aipo_cli.summary import summary_rows, summary_table
from aipo_core.access import ModelAccess
from aipo_core.config import RunConfig
from aipo_core.pipeline import STAGES, run


def iteration_rows(
    config: RunConfig, history: list[dict[str, dict[str, Any]]], *, artifact_root: Path, run_id: str
) -> list[dict[str, Any]]:
    """One row per evaluated model (θ_0 first) of the first benchmark, with LC computed over
    every evaluation the run wrote (aipo_core.eval_summary)."""
    from aipo_core.eval_summary import load_run_evaluations, summarize_evaluations

    benchmark = config.evaluation.benchmarks[0] if config.evaluation.benchmarks else ""
    summaries = summarize_evaluations(load_run_evaluations(artifact_root, run_id, config), config)
    pair_stats = {k: stages.get("rank", {}) for k, stages in enumerate(history)}
    return summary_rows([s.to_dict() for s in summaries], pair_stats, benchmark)


class _StageClock:
    """Turns the pipeline's after-stage callbacks into start and end transitions: stages run in
    `STAGES` order, so the next one starts when one ends."""

    def __init__(self, reporter: ProgressReporter, iterations: int) -> None:
        self.reporter, self.order = reporter, [(k, s) for k in range(iterations) for s in STAGES]
        self.position, self.since = 0, time.monotonic()

    def start_next(self) -> None:
        if self.position < len(self.order):
            k, stage = self.order[self.position]
            self.since = time.monotonic()
            self.reporter.transition(StageEvent(k, stage, "running"))

    def ended(self, k: int, stage: str, summary: dict[str, Any]) -> None:
        status = "skipped" if summary.get("skipped") else "succeeded"
        self.reporter.transition(StageEvent(k, stage, status, time.monotonic() - self.since, summary))
        self.position += 1
        self.start_next()

    def failed(self, error: BaseException) -> tuple[int, str]:
        """Report the running stage as failed; returns (iteration, stage)."""
        k, stage = self.order[min(self.position, len(self.order) - 1)]
        elapsed = time.monotonic() - self.since
        self.reporter.transition(StageEvent(k, stage, "failed", elapsed, error=first_line(error)))
        return k, stage


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def stage_failure(error: Exception, *, log_dir: Path, iteration: int, stage: str) -> RunFailed:
    """A stage that raised, as the CLI reports a failed run: its message, and its traceback kept in
    `log_dir` (as a worker keeps it in the stage's log) instead of printed over the progress."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"local-iter_{iteration}_{stage}.log"
    log.write_text("".join(traceback.format_exception(error)), encoding="utf-8")
    return RunFailed(
        f"iteration {iteration}: {stage} failed: {first_line(error)}",
        hint=f"the traceback is in {log}; `aipo --debug run …` prints it",
    )


def run_local(
    config: RunConfig,
    *,
    artifact_root: Path,
    run_id: str,
    model_cache_dir: Path,
    console: Console,
    access: ModelAccess | None = None,
) -> list[dict[str, Any]]:
    """Run every iteration in-process, reporting each stage transition; returns the summary rows.

    A stage that raises ends the run with `RunFailed` (exit 1), its traceback in the run's
    `logs/` folder; errors the CLI maps to a user error (a bad data row, a refused path) pass as
    they are.
    """
    benchmark = config.evaluation.benchmarks[0] if config.evaluation.benchmarks else ""
    reporter = make_reporter(console, total_stages=config.iterations * len(STAGES), benchmark=benchmark)
    with reporter:
        iterations = f"{config.iterations} iteration" + "s" * (config.iterations != 1)
        reporter.note(f"run {run_id} ({config.name}): {iterations}, in this process")
        stages = _StageClock(reporter, config.iterations)

        def sink(event: dict[str, Any]) -> None:
            if event.get("kind") == "progress":
                reporter.update(event["fraction"], event.get("message", ""))

        stages.start_next()
        try:
            history = run(
                config,
                artifact_root=artifact_root,
                run_id=run_id,
                sink=sink,
                model_cache_dir=model_cache_dir,
                on_stage=stages.ended,
                access=access,
            )
        except Exception as exc:
            k, stage = stages.failed(exc)
            if as_user_error(exc) is not None:
                raise  # a bad input or a refusal: the CLI names it
            log_dir = artifact_root / "runs" / run_id / "logs"
            raise stage_failure(exc, log_dir=log_dir, iteration=k, stage=stage) from exc
    rows = iteration_rows(config, history, artifact_root=artifact_root, run_id=run_id)
    console.print(summary_table(rows, benchmark))
    console.print(f"artifacts: {artifact_root / 'runs' / run_id}")
    return rows
