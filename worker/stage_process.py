"""The stage child process: start it in its own session, watch it, kill its whole group.

A stage body (model loading, generation, training) runs in a child process rather than in the
Celery task itself because:
- CUDA state and GPU memory belong to a process; a fresh process releases everything on exit;
- a running stage must be cancellable from outside, including any grandchildren it spawned
  (`accelerate launch`, data-loader workers): a session of its own makes the child the leader
  of a process group that one `killpg` reaches entirely;
- a crash (OOM, segfault) in the stage body must not take the worker down with it.

Children come from a multiprocessing *forkserver*: a clean, single-threaded process started
(by exec, not fork) on first use, which imports torch, transformers and the pipeline once and
then forks one child per stage. A child therefore starts in milliseconds instead of paying
several CPU-seconds of imports per stage, and it never inherits the worker's threads, locks or
database connections (the reason not to fork the worker itself). Nothing in the forkserver
touches CUDA, so every child still initialises its own.

The child writes its stdout/stderr to the stage log file, its events (metrics, progress) to an
events file, and its outcome to a result file, all named by a `StageFiles` (see
`worker.stage_runner` for the child's side of this contract, and for `python -m
worker.stage_runner SPEC`, which re-runs a stage by hand from its spec file).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import signal
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from aipo_core.artifacts import write_json_atomic

log = logging.getLogger(__name__)

_PROC = "/proc"

#: Imported once by the forkserver so that stage children start warm. Missing ones are skipped.
PRELOAD = ["worker.stage_preload"]

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(PRELOAD)


def warm_up() -> None:
    """Start the forkserver now, so its imports run before the first stage instead of during it."""
    multiprocessing.forkserver.ensure_running()


def shut_down() -> None:
    """Stop (and reap) the forkserver and multiprocessing's resource tracker before exiting.

    Both would otherwise outlive this process by a moment and be left to PID 1 to reap, which
    a container's init may never do. The forkserver gets SIGTERM first: it may still be busy
    with its imports and would only notice the closed pipe afterwards. Running stage children
    are unaffected (own sessions). `_stop` is the standard library's own (test) hook.
    """
    server = multiprocessing.forkserver._forkserver
    pid = getattr(server, "_forkserver_pid", None)
    if pid:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for helper in (server, multiprocessing.resource_tracker._resource_tracker):
        stop = getattr(helper, "_stop", None)
        if stop is not None:
            stop()


@dataclass(frozen=True)
class StageFiles:
    """Where one stage attempt's child process writes.

    `log` accumulates every attempt (each headed by a line from the supervisor), so that the
    API can serve the whole story. `spec`, `events` and `result` belong to one attempt: a
    superseded attempt's child that is still finishing can never hand its result or its
    metrics to the next attempt's supervisor.
    """

    log: Path
    spec: Path
    events: Path
    result: Path
    pid: Path

    @classmethod
    def under(cls, folder: Path, name: str, attempt: int | None = None) -> StageFiles:
        """The files of the stage called `name` inside `folder` (of attempt `attempt`, if given)."""
        own = name if attempt is None else f"{name}.attempt-{attempt}"
        return cls(
            log=folder / f"{name}.log",
            spec=folder / f"{own}.spec.json",
            events=folder / f"{own}.events.jsonl",
            result=folder / f"{own}.result.json",
            pid=folder / f"{name}.pid",
        )


@dataclass(frozen=True)
class StageOutcome:
    """How a child process ended: `ok` with the stage's summary, or an error message.

    `crashed` tells a stage body that raised (it reported its error: retrying repeats it) from a
    process that died without reporting (OOM killer, segfault, signal: a retry may succeed).
    """

    ok: bool
    summary: dict[str, Any]
    error: str | None
    returncode: int
    crashed: bool = False


class StageProcess:
    """A running stage child (see `worker.stage_runner.run_child`) that leads its own session."""

    def __init__(self, process: BaseProcess, files: StageFiles) -> None:
        self._process = process
        self.files = files

    @property
    def pid(self) -> int:
        """The child's pid; also its process-group id (it leads a new session)."""
        assert self._process.pid is not None
        return self._process.pid

    @classmethod
    def start(
        cls, spec: dict[str, Any], files: StageFiles, *, env: dict[str, str] | None = None, attempt: int = 1
    ) -> StageProcess:
        """Write `spec` (with `env` to apply in the child), clear the previous result, fork the child.

        The forkserver's environment is the one it started with, so per-stage variables travel
        in the spec rather than through this process's environment.
        """
        from worker.stage_runner import run_child

        files.log.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(files.spec, {**spec, "env": {**spec.get("env", {}), **(env or {})}})
        files.result.unlink(missing_ok=True)
        with open(files.log, "ab") as log:
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            log.write(f"=== {stamp} attempt {attempt} (supervisor pid {os.getpid()}) ===\n".encode())
        process = _CONTEXT.Process(
            target=run_child,
            args=(str(files.spec), str(files.log), os.getpid()),
            name=f"stage:{files.log.stem}",
        )
        process.start()
        # Operators and tests find the process group here (pgid == pid: it leads its session).
        files.pid.write_text(f"{process.pid}\n", encoding="utf-8")
        return cls(process, files)

    def poll(self) -> int | None:
        """The exit status if the child has exited (negative: killed by that signal), else None."""
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait up to `timeout` s for the child to exit; its exit status, or None if still running."""
        self._process.join(timeout)
        return self._process.exitcode

    def kill_group(self, grace_s: float = 5.0, *, reap_timeout_s: float = 60.0) -> bool:
        """SIGTERM the child's whole process group, SIGKILL whatever is left after `grace_s`.

        Returns True once the child has exited and no live process of the group remains; zombies
        count as gone (they hold no memory or GPU, and their reaping is up to whoever inherited
        them: init may be slow to do it on a busy machine, or never do it in a container).
        False, with an error logged, if some member outlived `reap_timeout_s` after SIGKILL (a
        process stuck in uninterruptible sleep, e.g. in a driver call).
        """
        pgid = self.pid
        _signal_group(pgid, signal.SIGTERM)
        if self._wait_gone(pgid, grace_s):
            return True
        _signal_group(pgid, signal.SIGKILL)
        if self._wait_gone(pgid, reap_timeout_s):
            return True
        log.error("stage process group %d still has live members %s after SIGKILL", pgid, group_members(pgid))
        return False

    def _wait_gone(self, pgid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while True:
            if self._process.exitcode is not None and not group_alive(pgid):
                self._process.join()
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def outcome(self) -> StageOutcome:
        """Read what the exited child reported; a missing result means it crashed or was killed."""
        self._process.join()
        code = self._process.exitcode
        assert code is not None
        try:
            data = json.loads(self.files.result.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            data = None
        if isinstance(data, dict) and data.get("ok") and code == 0:
            return StageOutcome(True, dict(data.get("summary") or {}), None, code)
        if isinstance(data, dict) and data.get("error"):
            return StageOutcome(False, {}, str(data["error"]), code)
        return StageOutcome(False, {}, _describe_exit(code, self.files.log), code, crashed=True)


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group `pgid`, read from /proc."""
    members = []
    for entry in os.scandir(_PROC):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_bytes()
        except OSError:  # exited while we were looking
            continue
        # "pid (comm) state ppid pgrp ...": comm may contain spaces and parentheses.
        state, _ppid, pgrp = stat[stat.rindex(b")") + 2 :].split()[:3]
        if int(pgrp) == pgid and state not in (b"Z", b"X"):
            members.append(int(entry.name))
    return members


def group_alive(pgid: int) -> bool:
    """Whether any live process remains in process group `pgid` (zombies are not alive).

    `killpg(pgid, 0)` alone would also count zombies: a SIGKILLed grandchild stays one until
    whoever inherited it reaps it, which on a busy machine can take a while.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - the group exists but belongs to someone else
        return True
    if not os.path.isdir(_PROC):  # pragma: no cover - no /proc: zombies cannot be told apart
        return True
    return bool(group_members(pgid))


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    """Signal the group; before the child's setsid() there is no such group yet: signal the child."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        try:
            os.kill(pgid, sig)
        except ProcessLookupError:
            pass


def _describe_exit(code: int, log: Path) -> str:
    """An error message for a child that left no result: its signal or code and its log tail."""
    how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
    return f"stage process {how} without a result; log tail:\n{_tail(log)}"


def _tail(path: Path, max_bytes: int = 2000) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - max_bytes))
            return fh.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return "(no log)"
