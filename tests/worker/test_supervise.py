"""The supervision loop with an in-memory StageControl: event delivery survives store hiccups."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from worker.supervise import supervise

from .test_stage_process import _start


class FlakyStore:
    """A StageControl whose first `forward` fails, as a briefly unreachable database would."""

    def __init__(self, stop_after_beats: int | None = None) -> None:
        self.events: list[dict[str, Any]] = []
        self.beats = 0
        self.failures = 0
        self.stop_after_beats = stop_after_beats

    def heartbeat(self) -> None:
        self.beats += 1

    def should_stop(self) -> bool:
        return self.stop_after_beats is not None and self.beats >= self.stop_after_beats

    def forward(self, events: list[dict[str, Any]]) -> None:
        if self.failures == 0:
            self.failures += 1
            raise ConnectionError("database restarting")
        self.events.extend(events)


def test_events_survive_a_failed_forward(tmp_path: Path) -> None:
    store = FlakyStore()
    result = supervise(_start(tmp_path, "tests.worker.stage_bodies:quick"), store, interval_s=0.1)
    assert result.outcome is not None and result.outcome.ok and not result.stopped
    assert store.failures == 1
    assert [e.get("step") for e in store.events if e["kind"] == "metric"] == [0, 1, 2]
    assert store.events[-1]["kind"] == "progress"


def test_stop_request_kills_the_child(tmp_path: Path) -> None:
    store = FlakyStore(stop_after_beats=3)
    process = _start(tmp_path, "tests.worker.stage_bodies:sleepy")
    result = supervise(process, store, interval_s=0.2, kill_grace_s=1.0)
    assert result.stopped and result.outcome is None
    assert process.poll() is not None and store.beats == 3
