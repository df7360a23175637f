"""`StageControl` backed by the store: heartbeats, cancellation checks, metric/progress ingest."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from backend.db import session_scope
from backend.store.metrics import ingest_metrics
from backend.store.stages import heartbeat


def metric_points(
    events: list[dict[str, Any]], *, iteration: int, stage: str, attempt: int
) -> list[dict[str, Any]]:
    """Flatten `{"kind": "metric", "step": s, "values": {k: v}}` events into store metric points.

    Non-numeric values are dropped (the metrics table holds floats); non-finite ones are kept,
    the store records them as NULL so a diverging loss stays visible as a gap.
    """
    points = []
    for event in events:
        if event.get("kind") != "metric":
            continue
        step = int(event.get("step", 0))
        for key, value in (event.get("values") or {}).items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            points.append(
                {
                    "iteration": iteration,
                    "stage": stage,
                    "attempt": attempt,
                    "key": str(key),
                    "step": step,
                    "value": float(value) if math.isfinite(value) else value,
                }
            )
    return points


def latest_progress(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The last progress event of a batch: only the newest state is worth storing."""
    for event in reversed(events):
        if event.get("kind") == "progress":
            return event
    return None


@dataclass
class StoreStageControl:
    """Supervision hooks for one claimed attempt of one stage.

    `should_stop` is true when the store refuses the heartbeat: run cancelled, stage no longer
    running, or another attempt has claimed the stage since (a reconciler took this worker for
    dead; `attempt` is the fencing token): two children must never work on the same stage.
    Metrics are stored under the attempt, and only while the attempt still holds the stage
    (the same fenced UPDATE as a heartbeat, in the same transaction), so a superseded attempt
    writes nothing more. `pid` (the child's, once started) travels with every heartbeat.
    """

    stage_id: int
    run_id: int
    iteration: int
    stage: str
    attempt: int
    pid: int | None = None
    _alive: bool = True
    _progress: dict[str, Any] | None = field(default=None, repr=False)

    def heartbeat(self) -> None:
        progress = self._progress or {}
        fraction = progress.get("fraction")
        with session_scope() as session:
            self._alive = heartbeat(
                session,
                self.stage_id,
                progress=None if fraction is None else min(1.0, max(0.0, float(fraction))),
                message=progress.get("message"),
                pid=self.pid,
                attempt=self.attempt,
            )

    def should_stop(self) -> bool:
        return not self._alive

    def forward(self, events: list[dict[str, Any]]) -> None:
        progress = latest_progress(events)
        if progress is not None:
            self._progress = progress
        points = metric_points(events, iteration=self.iteration, stage=self.stage, attempt=self.attempt)
        if not points:
            return
        with session_scope() as session:
            if not heartbeat(session, self.stage_id, attempt=self.attempt):
                session.rollback()
                self._alive = False
                return
            ingest_metrics(session, self.run_id, points)
