"""The stage child process: results, events, logs, crashes, group kill, orphan protection."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from worker.event_tail import EventTail
from worker.stage_process import StageFiles, StageProcess, group_alive

CONFIG = {"name": "t", "model": "tiny-random-llama"}


def _spec(tmp_path: Path, files: StageFiles, entry: str) -> dict:
    return {
        "entry": entry,
        "stage": "train",
        "config": CONFIG,
        "artifact_root": str(tmp_path),
        "run_id": "r1",
        "iteration": 0,
        "events": str(files.events),
        "result": str(files.result),
    }


def _start(tmp_path: Path, entry: str) -> StageProcess:
    files = StageFiles.under(tmp_path / "logs", "train")
    return StageProcess.start(_spec(tmp_path, files, entry), files)


def _wait_for(predicate, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purposes.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


def test_success_reports_summary_events_and_log(tmp_path: Path) -> None:
    proc = _start(tmp_path, "tests.worker.stage_bodies:quick")
    outcome = proc.outcome()
    assert outcome.ok, outcome.error
    assert outcome.summary == {"stage": "train", "run_id": "r1", "iteration": 0, "model": "tiny-random-llama"}
    events = EventTail(proc.files.events).read_new()
    assert [e["step"] for e in events if e["kind"] == "metric"] == [0, 1, 2]
    assert events[-1] == {"kind": "progress", "fraction": 1.0, "message": "done"}
    log = proc.files.log.read_text()
    assert "attempt 1" in log and "stdout line from train" in log and "stderr line from train" in log


def test_exception_in_stage_body_is_reported(tmp_path: Path) -> None:
    outcome = _start(tmp_path, "tests.worker.stage_bodies:failing").outcome()
    assert not outcome.ok and outcome.returncode == 1
    assert outcome.error == "ValueError: the judge refused to judge"


def test_abrupt_exit_is_reported_with_log_tail(tmp_path: Path) -> None:
    outcome = _start(tmp_path, "tests.worker.stage_bodies:crashing").outcome()
    assert not outcome.ok and outcome.returncode == 7
    assert "exited with status 7" in outcome.error and "about to crash" in outcome.error


def test_kill_group_reaches_grandchildren(tmp_path: Path) -> None:
    proc = _start(tmp_path, "tests.worker.stage_bodies:sleepy")
    pids = tmp_path / "pids"
    _wait_for(pids.exists)
    child, grandchild = map(int, pids.read_text().split())
    assert child == proc.pid and os.getpgid(grandchild) == proc.pid
    started = time.monotonic()
    assert proc.kill_group(grace_s=2.0)
    # Generous: SIGTERM ends both at once, but a loaded machine may schedule them late.
    assert time.monotonic() - started < 30
    assert not group_alive(proc.pid)
    assert not _pid_alive(grandchild)
    assert proc.poll() == -signal.SIGTERM


def test_kill_group_does_not_wait_for_an_unreaped_zombie(tmp_path: Path) -> None:
    """The flake, made deterministic: the killed grandchild stays a zombie after kill_group.

    Its new parent (here a child subreaper that never calls wait, standing in for an init slow
    to reap on a busy machine) keeps it a zombie of the group. A zombie is not a live member:
    kill_group returns and group_alive is False, while killpg(pgid, 0) still sees the group.
    """
    script = textwrap.dedent(f"""
        import ctypes, json, os, sys
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        PR_SET_CHILD_SUBREAPER = 36
        assert ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
        import worker.stage_process
        worker.stage_process._CONTEXT.set_forkserver_preload([])
        from worker.stage_process import group_alive
        from test_stage_process import _start, _state, _wait_for
        root = Path({str(tmp_path)!r})
        proc = _start(root, "tests.worker.stage_bodies:sleepy")
        _wait_for((root / "pids").exists)
        grandchild = int((root / "pids").read_text().split()[1])
        gone = proc.kill_group(grace_s=2.0)
        _wait_for(lambda: _state(grandchild) == "Z")
        try:
            os.killpg(proc.pid, 0)
            killpg_sees_group = True
        except ProcessLookupError:
            killpg_sees_group = False
        print(json.dumps({{"gone": gone, "alive": group_alive(proc.pid), "state": _state(grandchild),
                          "killpg_sees_group": killpg_sees_group}}), flush=True)
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, start_new_session=True
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report == {"gone": True, "alive": False, "state": "Z", "killpg_sees_group": True}


def _state(pid: int) -> str:
    """A process's state letter from /proc (R, S, Z, ...); "" once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return ""


def test_orphaned_child_kills_its_group_when_supervisor_dies(tmp_path: Path) -> None:
    """A SIGKILLed worker must not leave its stage running (it would race the retry)."""
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import worker.stage_process
        worker.stage_process._CONTEXT.set_forkserver_preload([])  # this test needs no warm torch
        from test_stage_process import _start
        proc = _start(Path({str(tmp_path)!r}), "tests.worker.stage_bodies:sleepy")
        print(proc.pid, flush=True)
        time.sleep(600)
    """)
    supervisor = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        child = int(supervisor.stdout.readline())
        _wait_for((tmp_path / "pids").exists)
        grandchild = int((tmp_path / "pids").read_text().split()[1])
        os.killpg(supervisor.pid, signal.SIGKILL)
        supervisor.wait()
        _wait_for(lambda: not group_alive(child) and not _pid_alive(grandchild), timeout_s=10)
    finally:
        for pgid in (supervisor.pid,):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_event_tail_keeps_partial_lines_for_later(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    tail = EventTail(path)
    assert tail.read_new() == []
    path.write_bytes(b'{"kind": "metric", "step": 1}\n{"kind": "prog')
    assert tail.read_new() == [{"kind": "metric", "step": 1}]
    with open(path, "ab") as fh:
        fh.write(b'ress"}\nnot json\n')
    assert tail.read_new() == [{"kind": "progress"}]
    assert tail.read_new() == []


@pytest.mark.parametrize("bad", ["no_colon", ":missing_module"])
def test_bad_entry_reference_is_reported(tmp_path: Path, bad: str) -> None:
    outcome = _start(tmp_path, bad).outcome()
    assert not outcome.ok and "expected 'module:function'" in outcome.error
