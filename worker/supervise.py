"""The supervision loop: heartbeat, event forwarding, cancellation and the lease while a stage child runs.

Two threads share the work. The task's thread owns the child process and never talks to the
store: it watches for the child's exit, a stop request, and the attempt's `Lease` running out.
A heartbeat thread does every store call (heartbeat, stop check, event forwarding) at a fixed
cadence. A store call can hang for minutes when the database is unreachable (a connection
attempt into a network partition); with the calls on their own thread, a hung call only stops
the lease from being renewed, and the child is killed in time all the same. Both talk to the
database only through a `StageControl`, which keeps them testable with any store and keeps SQL
out of here. `keepalive` covers the moment before the loop, while the child is being started.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from worker.event_tail import EventTail
from worker.lease import Lease
from worker.stage_process import StageOutcome, StageProcess

log = logging.getLogger(__name__)

#: How often the task's thread looks at the child, the stop flag and the lease.
WATCH_INTERVAL_S = 0.1


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
    """The end of a supervised stage: its outcome, or `stopped` when it was killed on request.

    `lost`: killed because the lease ran out (no heartbeat reached the store for too long).
    """

    outcome: StageOutcome | None
    stopped: bool
    lost: bool = False


def supervise(
    process: StageProcess,
    control: StageControl,
    *,
    interval_s: float,
    kill_grace_s: float = 5.0,
    lease: Lease | None = None,
) -> Supervised:
    """Run until the child exits, `control.should_stop()`, or `lease` expires; forward every event.

    A failing heartbeat or forward (database briefly unreachable) is logged and retried at the
    next tick rather than abandoning a healthy stage, for as long as the lease lasts. The child
    never outlives this call unless it exited by itself.
    """
    forwarder = _Forwarder(EventTail(process.files.events), control)
    beats = _HeartbeatThread(control, forwarder, lease, interval_s)
    beats.start()
    try:
        while process.poll() is None:
            if lease is not None and lease.expired():
                log.error(
                    "stage process group %d: no heartbeat reached the store for %g s; stopping it "
                    "before another worker may take the stage over",
                    process.pid,
                    lease.valid_s,
                )
                process.kill_group(grace_s=kill_grace_s)
                return Supervised(None, stopped=True, lost=True)
            if beats.stop_requested.is_set():
                log.info("stopping stage process group %d on request", process.pid)
                process.kill_group(grace_s=kill_grace_s)
                beats.finish(join_s=interval_s + 1.0)
                forwarder.flush()
                return Supervised(None, stopped=True)
            time.sleep(WATCH_INTERVAL_S)
        beats.finish(join_s=None)
        forwarder.flush(final=True)
        return Supervised(process.outcome(), stopped=False)
    finally:
        beats.finish(join_s=0)
        if process.poll() is None:  # an error above: never leave the child unsupervised
            process.kill_group(grace_s=kill_grace_s)


class _HeartbeatThread(threading.Thread):
    """Every `interval_s`: forward new events, heartbeat (renewing the lease), ask whether to stop."""

    def __init__(
        self, control: StageControl, forwarder: _Forwarder, lease: Lease | None, interval_s: float
    ) -> None:
        super().__init__(name="stage-heartbeat", daemon=True)
        self._control = control
        self._forwarder = forwarder
        self._lease = lease
        self._interval_s = interval_s
        self._done = threading.Event()
        self.stop_requested = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            _guarded(self._forwarder.flush)
            if _beat(self._control, self._lease) and _stop_requested(self._control):
                self.stop_requested.set()
                return  # the task's thread kills the child; nothing more to report
            self._done.wait(self._interval_s)

    def finish(self, *, join_s: float | None) -> None:
        """Stop after the current tick; wait up to `join_s` for it (None: as long as it takes).

        A tick stuck in a store call is left behind (a daemon thread) rather than waited for,
        except when the caller needs every event forwarded (the child exited by itself).
        """
        self._done.set()
        if join_s is None or join_s > 0:
            self.join(join_s)


def _beat(control: StageControl, lease: Lease | None) -> bool:
    """One heartbeat; the lease is renewed from the moment it was sent, once the store took it."""
    sent_at = time.monotonic()
    if not _guarded(control.heartbeat):
        return False
    if lease is not None and not control.should_stop():
        lease.renew(sent_at)
    return True


class _Forwarder:
    """Moves events from the tail to the store, keeping those a failed call could not deliver."""

    def __init__(self, tail: EventTail, control: StageControl) -> None:
        self._tail = tail
        self._control = control
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def flush(self, *, final: bool = False) -> None:
        with self._lock:
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
def keepalive(control: StageControl, *, interval_s: float, lease: Lease | None = None) -> Iterator[None]:
    """Heartbeat from a thread while the caller is blocked outside the supervision loop.

    Starting the child can wait for the forkserver to finish its imports (seconds, longer on a
    busy machine); without beats meanwhile the reconciler would take the stage for abandoned.
    """
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval_s):
            _beat(control, lease)

    thread = threading.Thread(target=beat, name="stage-keepalive", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(interval_s + 1.0)  # a beat stuck in a store call is left behind


def _stop_requested(control: StageControl) -> bool:
    try:
        return control.should_stop()
    except Exception:  # noqa: BLE001 - unknown means keep going; the next tick asks again
        log.exception("could not check whether the stage should stop")
        return False


def _guarded(call: Callable[[], Any]) -> bool:
    """Run `call`; False (logged) when it raised: transient store errors must not kill a stage."""
    try:
        call()
    except Exception:  # noqa: BLE001 - see supervise()
        log.exception("supervision call %s failed; retrying next tick", getattr(call, "__name__", call))
        return False
    return True
