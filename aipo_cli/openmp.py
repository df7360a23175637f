"""How torch's OpenMP threads wait for each other, chosen once per process before torch loads.

An OpenMP thread that has finished its share of an operation waits for its siblings, by spinning
or by sleeping. Which is faster depends on the machine's load (bench/cpu_decoding.py, 2 cores,
SmolLM2 bf16, 192 decoding steps of 32 rows):

* quiet machine: a short spin (`GOMP_SPINCOUNT=20000`, libgomp's default policy) took 35.8 s
  against 52.3 s sleeping at once (`OMP_WAIT_POLICY=PASSIVE`), and less CPU time (64 s vs 73 s):
  a decoding step is hundreds of small operations, and waking a sleeping thread for each costs
  more than the operation;
* two other busy processes on the two cores: spinning took 134 s against 75 s sleeping — the
  sibling being waited for is often descheduled, and the spinner burns the time it needs.

Shorter spins lose the gain (1,000: 52.5 s quiet; 5,000: 39.3 s quiet but 101 s busy). So the CLI
looks at the machine when it starts: spin briefly when it is quiet, sleep when it is busy. A long
worker keeps its choice while the load changes. A value the user set for either variable is kept.
libgomp reads them once, when torch loads.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Mapping, Sequence

QUIET_SPIN_COUNT = "20000"  # ~tens of microseconds of spinning before a thread sleeps


def machine_is_quiet(others_runnable: Sequence[int], cpus: int) -> bool:
    """Fewer than half the cores wanted by other processes, by the median of a few readings of the
    processes runnable right now (the 1-minute load average lags: after an install or a benchmark
    it still reads busy for a minute on a machine that is quiet)."""
    return statistics.median(others_runnable) < cpus / 2


def openmp_waiting(environ: Mapping[str, str], *, quiet: bool) -> dict[str, str]:
    """The variables to set: none when the user set either, else a short spin when quiet and
    passive waiting when not."""
    if "OMP_WAIT_POLICY" in environ or "GOMP_SPINCOUNT" in environ:
        return {}
    return {"GOMP_SPINCOUNT": QUIET_SPIN_COUNT} if quiet else {"OMP_WAIT_POLICY": "PASSIVE"}


def _others_runnable(readings: int = 5, every_s: float = 0.01) -> list[int]:
    """Processes runnable besides this one (/proc/loadavg's fourth field counts the reader), a few
    readings apart; busy readings where the system has no such file."""
    counts = []
    for _ in range(readings):
        try:
            with open("/proc/loadavg", encoding="ascii") as handle:
                counts.append(max(int(handle.read().split()[3].split("/")[0]) - 1, 0))
        except (OSError, IndexError, ValueError):
            return [1 << 16]
        time.sleep(every_s)
    return counts


def configure_openmp_waiting() -> dict[str, str]:
    """Set the waiting variables in this process's environment (inherited by the worker and stage
    processes it starts) and return what was set."""
    quiet = machine_is_quiet(_others_runnable(), os.cpu_count() or 1)
    chosen = openmp_waiting(os.environ, quiet=quiet)
    os.environ.update(chosen)
    return chosen
