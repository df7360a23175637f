"""How long a stage attempt may go on believing it holds its stage without hearing from the store.

The reconciler and other workers take a stage for abandoned once its stored heartbeat is older
than `heartbeat_timeout_s`; another attempt may start right after. A worker cut off from the
database cannot learn that, so it must assume it: its child may only run until
`heartbeat_timeout_s` after the last heartbeat the store accepted, minus the time the kill takes
(`kill_grace_s`) and two heartbeat intervals of margin (supervision notices within one). Then
the child is stopped, and two attempts never run at once, whatever the database does.

Clocks: the lease runs on this machine's monotonic clock from the moment a successful heartbeat
was *sent* (the stored time is stamped after that, so the lease always ends first). Comparing
that stored time across machines assumes their wall clocks agree to well within the margin.
"""

from __future__ import annotations

import threading
import time


def lease_seconds(*, heartbeat_timeout_s: float, heartbeat_interval_s: float, kill_grace_s: float) -> float:
    """The lease length for these settings; ValueError when they leave no room for one."""
    lease = heartbeat_timeout_s - kill_grace_s - 2 * heartbeat_interval_s
    if lease < heartbeat_interval_s:
        raise ValueError(
            "AIPO_STAGE_HEARTBEAT_TIMEOUT_S must exceed AIPO_STAGE_KILL_GRACE_S + 3 × "
            f"AIPO_STAGE_HEARTBEAT_INTERVAL_S (= {kill_grace_s + 3 * heartbeat_interval_s:g} s), "
            f"got {heartbeat_timeout_s:g} s: a worker cut off from the database could not stop its "
            "stage before another worker may start it again"
        )
    return lease


class Lease:
    """Thread-safe: heartbeat threads `renew` it, the supervision loop asks `expired`."""

    def __init__(self, valid_s: float, *, started: float | None = None) -> None:
        self.valid_s = valid_s
        self._renewed = time.monotonic() if started is None else started
        self._lock = threading.Lock()

    def renew(self, sent_at: float) -> None:
        """A heartbeat sent at `sent_at` (monotonic) was accepted by the store."""
        with self._lock:
            self._renewed = max(self._renewed, sent_at)

    def remaining(self) -> float:
        with self._lock:
            return self._renewed + self.valid_s - time.monotonic()

    def expired(self) -> bool:
        return self.remaining() <= 0
