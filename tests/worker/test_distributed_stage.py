"""A 2-process train stage in a stage child: cancel (group kill) and SIGKILL leave no rank alive."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from aipo_core import artifacts
from aipo_core.models import load_model_and_tokenizer
from aipo_core.training import attach_reference_logps
from tests.aipo_core.test_training import make_pairs
from worker.event_tail import EventTail
from worker.stage_process import StageFiles, StageProcess

CONFIG = {
    "name": "ddp-cancel",
    "model": "tiny-random-llama",
    "device": "cpu",
    "training": {
        "batch_size": 4,
        "max_steps": 100_000,  # never finishes on its own
        "warmup_ratio": 0.0,
        "max_length": 128,
        "max_prompt_length": 64,
        "num_processes": 2,
    },
}


def _start_train_stage(tmp_path: Path) -> StageProcess:
    model, tokenizer = load_model_and_tokenizer("tiny-random-llama")
    pairs = attach_reference_logps(
        make_pairs(8), model, tokenizer, batch_size=4, max_prompt_length=64, max_length=128
    )
    artifacts.write_jsonl_atomic(artifacts.iteration_dir(tmp_path, "r1", 0) / "pairs.jsonl", pairs)
    files = StageFiles.under(tmp_path / "logs", "train")
    spec = {
        "stage": "train",
        "config": CONFIG,
        "artifact_root": str(tmp_path),
        "run_id": "r1",
        "iteration": 0,
        "events": str(files.events),
        "result": str(files.result),
    }
    return StageProcess.start(spec, files)


def _ranks(root: int) -> list[psutil.Process]:
    """Training processes below `root` (the launcher's agent gives each its own session)."""
    try:
        below = psutil.Process(root).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [
        p
        for p in below
        if "aipo_core.distributed" in " ".join(p.cmdline()) and "launch" not in p.cmdline()[2]
    ]


def _wait_training(proc: StageProcess, timeout_s: float = 240) -> list[psutil.Process]:
    """Both ranks exist and the first optimiser step has been reported."""
    tail = EventTail(proc.files.events)
    deadline = time.monotonic() + timeout_s
    stepped = False
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.files.log.read_text()[-3000:]
        stepped = stepped or any(e.get("kind") == "metric" for e in tail.read_new())
        ranks = _ranks(proc.pid)
        if stepped and len(ranks) == 2:
            return ranks
        time.sleep(0.2)
    raise AssertionError(f"training did not start:\n{proc.files.log.read_text()[-3000:]}")


def _every_process_below(proc: StageProcess) -> list[psutil.Process]:
    return [proc_ for proc_ in psutil.Process(proc.pid).children(recursive=True)]


def _all_gone(processes: list[psutil.Process], timeout_s: float) -> bool:
    _, alive = psutil.wait_procs(processes, timeout=timeout_s)
    return not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.timeout(400)
def test_cancel_of_a_two_process_train_stage_leaves_no_rank_alive(tmp_path: Path) -> None:
    proc = _start_train_stage(tmp_path)
    try:
        ranks = _wait_training(proc)
        assert all(os.getsid(r.pid) != os.getsid(proc.pid) for r in ranks)  # outside the group
        everything = _every_process_below(proc)
        started = time.monotonic()
        proc.kill_group(grace_s=5.0)  # what the worker does on cancel
        assert _all_gone(everything, timeout_s=max(0.1, 10 - (time.monotonic() - started)))
        assert time.monotonic() - started < 10
    finally:
        for p in _ranks(proc.pid):
            p.kill()


@pytest.mark.timeout(400)
def test_sigkill_of_the_stage_group_takes_the_ranks_down(tmp_path: Path) -> None:
    """A worker killed hard: the group's SIGKILL cannot be forwarded, the ranks follow their parent."""
    proc = _start_train_stage(tmp_path)
    try:
        ranks = _wait_training(proc)
        everything = _every_process_below(proc)
        started = time.monotonic()
        os.killpg(proc.pid, signal.SIGKILL)
        assert _all_gone(everything, timeout_s=10)
        assert all(not r.is_running() or r.status() == psutil.STATUS_ZOMBIE for r in ranks)
        assert time.monotonic() - started < 10
    finally:
        proc.wait(5)
