"""`aipo run CONFIG --local`: Algorithm 1 in this process, with rich progress and a summary table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from aipo_cli.summary import summary_table
from aipo_core.access import ModelAccess
from aipo_core.config import RunConfig
from aipo_core.pipeline import STAGES, run


def iteration_rows(history: list[dict[str, dict[str, Any]]], benchmark: str) -> list[dict[str, Any]]:
    """One row per iteration with the numbers researchers compare first."""
    rows = []
    for k, stages in enumerate(history):
        rank, evaluate = stages.get("rank", {}), stages.get("evaluate", {})
        rows.append(
            {
                "iteration": k,
                "pairs": rank.get("pairs"),
                "agreement_rate": rank.get("agreement_rate"),
                "win_rate": evaluate.get(f"{benchmark}/win_rate"),
                "lc_win_rate": evaluate.get(f"{benchmark}/lc_win_rate"),
                "avg_length": evaluate.get(f"{benchmark}/avg_length"),
            }
        )
    return rows


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
    benchmark = config.evaluation.benchmarks[0] if config.evaluation.benchmarks else ""
    rows = iteration_rows(history, benchmark)
    console.print(summary_table(rows, f"Per-iteration summary ({benchmark})"))
    console.print(f"artifacts: {artifact_root / 'runs' / run_id}")
    return rows
