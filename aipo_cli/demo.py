"""`aipo demo`: the embedded stack, a 2-iteration AIPO run on SmolLM2-135M, a progress bar,
a per-iteration summary table and the dashboard URL."""

from __future__ import annotations

import sys
import time
from importlib import resources
from typing import Any

import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from aipo_cli.api import ApiClient
from aipo_cli.summary import summary_rows, summary_table

TERMINAL = {"succeeded", "failed", "cancelled"}


def demo_config() -> dict[str, Any]:
    text = resources.files("aipo_cli").joinpath("configs/demo.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def iterations_table(iterations: dict[str, Any], benchmark: str = "alpaca_eval") -> Table:
    """The summary table from the API's GET /runs/{id}/iterations (θ_0 first, then θ_1 … θ_K)."""
    evaluations = list(iterations.get("base_evaluations", {}).values())
    pair_stats = {}
    for it in iterations.get("items", []):
        evaluations.extend((it.get("evaluations") or {}).values())
        pair_stats[it["index"]] = it.get("pair_stats") or {}
    return summary_table(summary_rows(evaluations, pair_stats, benchmark), benchmark)


def follow_run(client: ApiClient, run_id: int, console: Console, poll_s: float = 2.0) -> dict[str, Any]:
    """Poll the run until it ends, drawing one bar over all its stages."""
    columns = (TextColumn("{task.description:<34}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"))
    with Progress(*columns, TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("queued", total=1.0)
        while True:
            run = client.get_run(run_id)
            progress = run.get("progress") or {}
            where = (
                f"iter {progress.get('current_iteration')}: {progress.get('current_stage')}"
                if progress.get("current_stage")
                else run["status"]
            )
            bar.update(task, completed=progress.get("fraction") or 0.0, description=where)
            if run["status"] in TERMINAL:
                return run
            time.sleep(poll_s)


def run_demo(*, api_port: int, dashboard_port: int, keep_running: bool | None, console: Console) -> int:
    from aipo_cli.services import describe, running_stack

    console.print("[bold]AIPO Lab demo[/bold]: starting the embedded stack (SQLite + local broker)…")
    with running_stack(api_port=api_port, dashboard_port=dashboard_port) as stack:
        console.print(describe(stack))
        client = ApiClient(stack.api_url, stack.token)
        run = client.submit_run(demo_config())
        console.print(
            f"submitted run {run['id']} ({run['name']}): 2 iterations of AIPO on SmolLM2-135M-Instruct"
        )
        run = follow_run(client, run["id"], console)
        console.print(iterations_table(client.iterations(run["id"])))
        if run["status"] != "succeeded":
            console.print(f"[red]run {run['status']}[/red]: {run.get('error')}")
        link = (
            f"{stack.dashboard_url}/run?run={run['id']}" if stack.dashboard_url else "(dashboard not started)"
        )
        console.print(f"Dashboard: {link}")
        if keep_running if keep_running is not None else sys.stdin.isatty():
            console.print("The stack keeps running for the dashboard; Ctrl-C stops it.")
            try:
                while not stack.dead():
                    time.sleep(1.0)
            except KeyboardInterrupt:
                pass
        return 0 if run["status"] == "succeeded" else 1
