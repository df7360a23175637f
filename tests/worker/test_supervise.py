"""The supervision loop with an in-memory StageControl: event delivery survives store hiccups."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from worker.lease import Lease, lease_seconds
from worker.stage_process import group_alive
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


class UnreachableStore:
    """Accepts `good_beats` heartbeats, then every store call hangs, as calls into a network
    partition do (until `reachable` is set, and then they fail)."""

    def __init__(self, good_beats: int) -> None:
        self.good_beats = good_beats
        self.beats = 0
        self.last_accepted: float | None = None
        self.reachable = threading.Event()

    def _hang_if_cut(self) -> None:
        if self.beats >= self.good_beats:
            self.reachable.wait()
            raise ConnectionError("server closed the connection unexpectedly")

    def heartbeat(self) -> None:
        self._hang_if_cut()
        self.beats += 1
        self.last_accepted = time.monotonic()

    def should_stop(self) -> bool:
        return False

    def forward(self, events: list[dict[str, Any]]) -> None:
        self._hang_if_cut()


def test_child_is_stopped_when_the_lease_runs_out_even_if_store_calls_hang(tmp_path: Path) -> None:
    store = UnreachableStore(good_beats=3)
    process = _start(tmp_path, "tests.worker.stage_bodies:sleepy")
    lease = Lease(2.0)
    try:
        result = supervise(process, store, interval_s=0.1, kill_grace_s=0.5, lease=lease)
        stopped_at = time.monotonic()
    finally:
        store.reachable.set()
    assert result.lost and result.stopped and result.outcome is None
    assert process.poll() is not None and not group_alive(process.pid)
    assert store.beats == 3 and store.last_accepted is not None
    # Killed after the lease (from the last accepted beat's sending) and within the kill grace;
    # generous upper slack for a loaded machine.
    assert 2.0 - 0.2 <= stopped_at - store.last_accepted <= 2.0 + 0.5 + 5.0


def test_a_store_outage_shorter_than_the_lease_leaves_the_stage_running(tmp_path: Path) -> None:
    store = FlakyStore(stop_after_beats=8)
    outage = {"left": 5}  # 5 failing beats of 0.1 s: well inside a 3 s lease

    def heartbeat() -> None:
        if outage["left"]:
            outage["left"] -= 1
            raise ConnectionError("database restarting")
        store.beats += 1

    store.heartbeat = heartbeat  # type: ignore[method-assign]
    process = _start(tmp_path, "tests.worker.stage_bodies:sleepy")
    result = supervise(process, store, interval_s=0.1, kill_grace_s=0.5, lease=Lease(3.0))
    assert result.stopped and not result.lost, "stopped on request, not for a lost lease"
    assert outage["left"] == 0 and store.beats == 8


def test_lease_is_renewed_from_the_sending_time_and_never_moves_back() -> None:
    lease = Lease(10.0, started=time.monotonic() - 9.5)
    assert 0 < lease.remaining() <= 0.5 and not lease.expired()
    now = time.monotonic()
    lease.renew(now)
    lease.renew(now - 5)  # a slow, older beat accepted late changes nothing
    assert 9.0 < lease.remaining() <= 10.0
    assert Lease(1.0, started=time.monotonic() - 1.0).expired()


def test_timings_without_room_for_a_lease_are_refused() -> None:
    assert lease_seconds(heartbeat_timeout_s=120, heartbeat_interval_s=10, kill_grace_s=5) == 95
    with pytest.raises(ValueError, match="AIPO_STAGE_HEARTBEAT_TIMEOUT_S must exceed"):
        lease_seconds(heartbeat_timeout_s=10, heartbeat_interval_s=3, kill_grace_s=2)
