"""The supervision loop: heartbeat, event forwarding and cancellation while a stage child runs.

Once the child runs, one loop in the task's thread does everything at a fixed cadence, so there
is no thread to coordinate with and nothing runs after the task returns (`keepalive` covers the
moment before, while the child is being started). Both talk to the database only through a
`StageControl`, which keeps them testable with any store and keeps SQL out of here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from worker.event_tail import EventTail
from worker.stage_process import StageOutcome, StageProcess

log = logging.getLogger(__name__)


class StageControl(Protocol):
    """What the supervision loop needs from the outside world (the store, in production)."""

    def heartbeat(self) -> None:
        """Record that the stage is alive (stage row heartbeat = now)."""

    def should_stop(self) -> bool:
        """True when the run was cancelled (or the stage was taken from this worker)."""

    def forward(self, events: list[dict[str, Any]]) -> None:
        """Store metrics and progress events (bulk; must be idempotent)."""


@dataclass(frozen=True)
class Supervised:
    """The end of a supervised stage: its outcome, or `stopped` when it was killed on request."""

    outcome: StageOutcome | None
    stopped: bool


def supervise(
    process: StageProcess, control: StageControl, *, interval_s: float, kill_grace_s: float = 5.0
) -> Supervised:
    """Run the loop until the child exits or `control.should_stop()`; always forward every event.

    A failing heartbeat or forward (database briefly unreachable) is logged and retried at the
    next tick rather than abandoning a healthy stage: the reconciler only re-enqueues a stage
    after its heartbeat has been missing for much longer than one tick.
    """
    forwarder = _Forwarder(EventTail(process.files.events), control)
    while True:
        exited = _wait(process, interval_s)
        forwarder.flush()
        if exited:
            forwarder.flush(final=True)
            return Supervised(process.outcome(), stopped=False)
        _guarded(control.heartbeat)
        if _stop_requested(control):
            log.info("stopping stage process group %d on request", process.pid)
            process.kill_group(grace_s=kill_grace_s)
            forwarder.flush()
            return Supervised(None, stopped=True)


class _Forwarder:
    """Moves events from the tail to the store, keeping those a failed call could not deliver."""

    def __init__(self, tail: EventTail, control: StageControl) -> None:
        self._tail = tail
        self._control = control
        self._pending: list[dict[str, Any]] = []

    def flush(self, *, final: bool = False) -> None:
        self._pending.extend(self._tail.read_new())
        attempts = 3 if final else 1
        for attempt in range(attempts):
            if not self._pending:
                return
            try:
                self._control.forward(self._pending)
                self._pending = []
                return
            except Exception:  # noqa: BLE001 - see supervise(): keep the events, retry later
                log.exception("forwarding %d events failed (attempt %d)", len(self._pending), attempt + 1)
                if attempt + 1 < attempts:
                    time.sleep(1.0)
        if final and self._pending:
            raise RuntimeError(f"could not store {len(self._pending)} events of the finished stage")


@contextmanager
def keepalive(control: StageControl, *, interval_s: float) -> Iterator[None]:
    """Heartbeat from a thread while the caller is blocked outside the supervision loop.

    Starting the child can wait for the forkserver to finish its imports (seconds, longer on a
    busy machine); without beats meanwhile the reconciler would take the stage for abandoned.
    """
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval_s):
            _guarded(control.heartbeat)

    thread = threading.Thread(target=beat, name="stage-keepalive", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _wait(process: StageProcess, interval_s: float) -> bool:
    """Sleep up to `interval_s`, returning early (True) when the child exits."""
    deadline = time.monotonic() + interval_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return True
        time.sleep(min(0.1, interval_s))
    return process.poll() is not None


def _stop_requested(control: StageControl) -> bool:
    try:
        return control.should_stop()
    except Exception:  # noqa: BLE001 - unknown means keep going; the next tick asks again
        log.exception("could not check whether the stage should stop")
        return False


def _guarded(call: Any) -> None:
    try:
        call()
    except Exception:  # noqa: BLE001 - see supervise(): transient store errors must not kill a stage
        log.exception("supervision call %s failed; retrying next tick", getattr(call, "__name__", call))
