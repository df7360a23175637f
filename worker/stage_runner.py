"""The stage child's side: run one stage body from a spec file, report back through files only.

`run_child` is what the supervisor (`worker.stage_process`) starts in a forked child;
`python -m worker.stage_runner SPEC.json` runs the same spec by hand (debugging a stage).
The child needs no database and no broker, only the spec written by its supervisor:

    spec = {"entry": "aipo_core.pipeline:run_stage", "stage": "train", "config": {...RunConfig...},
            "artifact_root": "...", "run_id": "...", "iteration": 0,
            "events": ".../train.events.jsonl", "result": ".../train.result.json",
            "model_cache_dir": "..." (optional), "scratch_dir": "..." (optional),
            "env": {...} (optional, applied before running),
            "model_access": {...} (optional, `aipo_core.access.ModelAccess.to_dict()`)}

- events: one JSON object per line, appended and flushed as the stage emits them;
- result: {"ok": true, "summary": {...}} or {"ok": false, "error": "..."}, written atomically
  just before exiting (status 0 on success, 1 on failure).

The stage body is called as `entry(stage, config, artifact_root=Path, run_id=str, iteration=int,
sink=callable[, model_cache_dir=Path][, scratch_dir=Path][, access=ModelAccess])`, which is
`aipo_core.pipeline.run_stage`'s signature; `access` is passed to entries that take it (stand-in
bodies in tests load no model). With `scratch_dir` the body leaves its outputs there: the
supervisor publishes them only while its attempt still holds the stage.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aipo_core.access import ModelAccess
from aipo_core.artifacts import write_json_atomic
from aipo_core.config import RunConfig

DEFAULT_ENTRY = "aipo_core.pipeline:run_stage"


def load_entry(reference: str) -> Callable[..., dict[str, Any]]:
    """Import `package.module:function`."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"entry {reference!r}: expected 'module:function'")
    return getattr(importlib.import_module(module_name), attribute)


class EventFileSink:
    """A thread-safe `sink(event)` that appends JSON lines to a file and flushes each one.

    Flushing per event lets the supervisor forward progress while the stage is still running;
    stages emit at most a few events per second, so the cost is negligible.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> None:
        line = json.dumps(event, default=float)
        with self._lock:
            self._fh.write(line + "\n")
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            self._fh.close()


def watch_parents(supervisor_pid: int, interval_s: float = 0.5) -> threading.Thread:
    """Kill this process group as soon as the supervising worker process is gone.

    The child runs in its own session, so a SIGKILLed worker would otherwise leave it running
    as an orphan that keeps the GPU busy and races the retry for the same artifacts. The
    child's parent is the forkserver, which exits when the worker dies (so our parent changes);
    the worker's pid is checked as well.
    """
    parent = os.getppid()

    def watch() -> None:
        while True:
            if os.getppid() != parent or not _alive(supervisor_pid):
                os.killpg(os.getpgid(0), signal.SIGKILL)
            time.sleep(interval_s)

    thread = threading.Thread(target=watch, name="supervisor-watch", daemon=True)
    thread.start()
    return thread


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - exists, owned by someone else
        return True
    return True


def run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the stage described by `spec` and return its summary."""
    entry = load_entry(spec.get("entry") or DEFAULT_ENTRY)
    config = RunConfig.model_validate(spec["config"])
    sink = EventFileSink(Path(spec["events"]))
    extra: dict[str, Any] = {
        name: Path(spec[name]) for name in ("model_cache_dir", "scratch_dir") if spec.get(name)
    }
    if spec.get("model_access") is not None and "access" in inspect.signature(entry).parameters:
        extra["access"] = ModelAccess.from_dict(spec["model_access"])
    try:
        return entry(
            spec["stage"],
            config,
            artifact_root=Path(spec["artifact_root"]),
            run_id=str(spec["run_id"]),
            iteration=int(spec["iteration"]),
            sink=sink,
            **extra,
        )
    finally:
        sink.close()


def execute(spec_path: str) -> int:
    """Run the spec at `spec_path`, write its result file; the exit status to report."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    os.environ.update(spec.get("env") or {})
    result_path = Path(spec["result"])
    print(f"stage {spec['stage']} of run {spec['run_id']} iteration {spec['iteration']}: pid {os.getpid()}")
    try:
        summary = run_spec(spec)
        # Inside the try: a summary that is not JSON is the stage's error, not a crash to retry.
        write_json_atomic(result_path, {"ok": True, "summary": summary or {}})
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the supervisor
        traceback.print_exc()
        write_json_atomic(result_path, {"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        return 1
    print(f"stage {spec['stage']}: done")
    return 0


def run_child(spec_path: str, log_path: str, supervisor_pid: int) -> None:
    """Forked-child entry: own session, output to the stage log, watchdog, run, exit with status."""
    os.setsid()
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    for stream, fd in ((sys.stdout, 1), (sys.stderr, 2)):
        stream.flush()
        os.dup2(log_fd, fd)
    os.close(log_fd)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    watch_parents(supervisor_pid)
    sys.exit(execute(spec_path))


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m worker.stage_runner SPEC.json", file=sys.stderr)
        return 2
    return execute(argv[0])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
