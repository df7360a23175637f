"""`aipo demo`: the embedded stack, a 2-iteration AIPO run on SmolLM2-135M, its progress (a live
bar on a terminal, one line per stage transition elsewhere), a per-iteration summary table and the
dashboard URL."""

from __future__ import annotations

import sys
import time
from importlib import resources
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from aipo_cli.api import ApiClient
from aipo_cli.follow import TERMINAL, follow_run
from aipo_cli.summary import summary_rows, summary_table

__all__ = ["TERMINAL", "demo_config", "follow_run", "iterations_table", "run_demo"]


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


def run_demo(*, api_port: int, dashboard_port: int, keep_running: bool | None, console: Console) -> int:
    from aipo_cli.services import describe, running_stack

    console.print("[bold]AIPO Lab demo[/bold]: starting the embedded stack (SQLite + local broker)…")
    with running_stack(api_port=api_port, dashboard_port=dashboard_port) as stack:
        console.print(describe(stack))
        client = ApiClient(stack.api_url, stack.token)
        config = demo_config()
        benchmark = (config.get("evaluation", {}).get("benchmarks") or ["alpaca_eval"])[0]
        run = client.submit_run(config)
        console.print(
            f"submitted run {run['id']} ({run['name']}): 2 iterations of AIPO on SmolLM2-135M-Instruct",
            soft_wrap=True,  # one line in a log, whatever the console's width
        )
        run = follow_run(client, run["id"], console, benchmark=benchmark)
        console.print(iterations_table(client.iterations(run["id"]), benchmark))
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
