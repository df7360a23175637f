"""`aipo run CONFIG --local`: Algorithm 1 in this process, with rich progress and a summary table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

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


def run_local(
    config: RunConfig,
    *,
    artifact_root: Path,
    run_id: str,
    model_cache_dir: Path,
    console: Console,
    access: ModelAccess | None = None,
) -> list[dict[str, Any]]:
    """Run every iteration in-process; progress bars per stage; returns the summary rows."""
    columns = (TextColumn("{task.description:<28}"), BarColumn(), TextColumn("{task.fields[note]}"))
    with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
        overall = progress.add_task("run", total=config.iterations * len(STAGES), note=config.name)
        current = progress.add_task("", total=1.0, note="")

        def sink(event: dict[str, Any]) -> None:
            if event.get("kind") == "progress":
                progress.update(current, completed=event["fraction"], note=event.get("message", "")[:60])

        def on_stage(k: int, stage: str, summary: dict[str, Any]) -> None:
            progress.advance(overall)
            progress.update(current, description=f"iter {k}: after {stage}", completed=0.0)

        history = run(
            config,
            artifact_root=artifact_root,
            run_id=run_id,
            sink=sink,
            model_cache_dir=model_cache_dir,
            on_stage=on_stage,
            access=access,
        )
    rows = iteration_rows(config, history, artifact_root=artifact_root, run_id=run_id)
    benchmark = config.evaluation.benchmarks[0] if config.evaluation.benchmarks else ""
    console.print(summary_table(rows, benchmark))
    console.print(f"artifacts: {artifact_root / 'runs' / run_id}")
    return rows
