"""Following a run over HTTP until it ends (`aipo demo`, `aipo submit --wait`).

Polls GET /runs/{id} and GET /runs/{id}/stages; each stage whose status changed since the last
poll is one transition for the progress reporter (`aipo_cli.progress`), with the stage's duration
from the server's timestamps and, once it ended, its key metric from its logged summary. A stage
that started and ended between two polls shows only its end.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from rich.console import Console

from aipo_cli.api import ApiClient
from aipo_cli.progress import ENDED, KEY_METRICS, ProgressReporter, StageEvent, clock, make_reporter

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


def _seconds(stage: dict[str, Any]) -> float | None:
    start, end = stage.get("started_at"), stage.get("finished_at")
    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def _shown(previous: str | None, status: str) -> bool:
    """A change worth a line: not `pending`, and `queued` only when it means a retry."""
    if status == previous or status == "pending":
        return False
    return status != "queued" or previous in ENDED | {"running"}


class RunFollower:
    """Turns successive polls of one run into transitions for `reporter`."""

    def __init__(self, client: ApiClient, run_id: int, reporter: ProgressReporter, benchmark: str) -> None:
        self.client, self.run_id, self.reporter, self.benchmark = client, run_id, reporter, benchmark
        self.seen: dict[int, str] = {}

    def poll(self) -> dict[str, Any]:
        run = self.client.get_run(self.run_id)
        stages = sorted(self.client.stages(self.run_id), key=lambda s: (s["iteration"], s["position"]))
        if stages and self.reporter.total_stages != len(stages):
            self.reporter.set_total(len(stages))
        for stage in stages:
            previous = self.seen.get(stage["id"])
            self.seen[stage["id"]] = stage["status"]
            if _shown(previous, stage["status"]):
                self.reporter.transition(self._event(stage))
        running = [s for s in stages if s["status"] == "running"]
        if running:
            self.reporter.update(running[0].get("progress") or 0.0, running[0].get("message") or "")
        return run

    def _event(self, stage: dict[str, Any]) -> StageEvent:
        status = stage["status"]
        metrics: dict[str, Any] = {}
        if status == "succeeded":
            metrics = self._summary(stage)
        elif status == "skipped":
            metrics = {"skipped": (stage.get("message") or "skipped").removeprefix("skipped: ")}
        error = (stage.get("error") or "").strip().splitlines()
        return StageEvent(
            stage["iteration"],
            stage["name"],
            status,
            _seconds(stage),
            metrics,
            error=error[-1] if error else None,
        )

    def _summary(self, stage: dict[str, Any]) -> dict[str, Any]:
        keys = list(KEY_METRICS.get(stage["name"], ()))
        if stage["name"] == "evaluate":
            keys = [f"{self.benchmark}/{key}" for key in keys]
        if not keys:
            return {}
        return self.client.stage_metrics(self.run_id, stage["iteration"], stage["name"], keys)


def follow_run(
    client: ApiClient,
    run_id: int,
    console: Console,
    poll_s: float = 2.0,
    *,
    benchmark: str = "alpaca_eval",
    reporter: ProgressReporter | None = None,
) -> dict[str, Any]:
    """Poll the run until it ends, reporting each stage transition; returns the final run."""
    started = time.monotonic()
    with reporter or make_reporter(console, benchmark=benchmark) as shown:
        follower = RunFollower(client, run_id, shown, benchmark)
        while True:
            run = follower.poll()
            if run["status"] in TERMINAL:
                shown.note(f"run {run_id} {run['status']} after {clock(time.monotonic() - started)}")
                return run
            time.sleep(poll_s)
