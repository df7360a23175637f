"""Tiny stage bodies with `aipo_core.pipeline.run_stage`'s signature, for supervision tests.

They exercise the child-process machinery (events, results, crashes, process groups) without
loading a model. The child imports them as `tests.worker.stage_bodies:<name>`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aipo_core.config import RunConfig


def quick(
    stage: str,
    config: RunConfig,
    *,
    artifact_root: Path,
    run_id: str,
    iteration: int,
    sink: Callable[[dict], None] | None = None,
    model_cache_dir: Path | None = None,
    scratch_dir: Path | None = None,
) -> dict[str, Any]:
    """Emits three metrics and a progress event, prints to both streams, returns a summary."""
    assert sink is not None
    for step in range(3):
        sink({"kind": "metric", "step": step, "values": {"loss": 1.0 / (step + 1)}})
    sink({"kind": "progress", "fraction": 1.0, "message": "done"})
    print(f"stdout line from {stage}")
    print(f"stderr line from {stage}", file=sys.stderr)
    return {"stage": stage, "run_id": run_id, "iteration": iteration, "model": config.model}


def sleepy(
    stage: str,
    config: RunConfig,
    *,
    artifact_root: Path,
    run_id: str,
    iteration: int,
    sink: Callable[[dict], None] | None = None,
    model_cache_dir: Path | None = None,
    scratch_dir: Path | None = None,
) -> dict[str, Any]:
    """Starts a grandchild and never finishes on its own: something to cancel or orphan."""
    grandchild = subprocess.Popen(["sleep", "600"])
    (Path(artifact_root) / "pids").write_text(f"{os.getpid()} {grandchild.pid}")
    step = 0
    while True:
        assert sink is not None
        sink({"kind": "progress", "fraction": 0.0, "message": f"tick {step}"})
        step += 1
        time.sleep(0.2)


def failing(
    stage: str,
    config: RunConfig,
    *,
    artifact_root: Path,
    run_id: str,
    iteration: int,
    sink: Callable[[dict], None] | None = None,
    model_cache_dir: Path | None = None,
    scratch_dir: Path | None = None,
) -> dict[str, Any]:
    """Raises: the error message must reach the supervisor."""
    raise ValueError("the judge refused to judge")


def crashing(
    stage: str,
    config: RunConfig,
    *,
    artifact_root: Path,
    run_id: str,
    iteration: int,
    sink: Callable[[dict], None] | None = None,
    model_cache_dir: Path | None = None,
    scratch_dir: Path | None = None,
) -> dict[str, Any]:
    """Dies abruptly (like an OOM kill): no result file, only the log."""
    print("about to crash", flush=True)
    os._exit(7)


def unserialisable(
    stage: str,
    config: RunConfig,
    *,
    artifact_root: Path,
    run_id: str,
    iteration: int,
    sink: Callable[[dict], None] | None = None,
    model_cache_dir: Path | None = None,
    scratch_dir: Path | None = None,
) -> dict[str, Any]:
    """Returns a summary that JSON cannot hold (a stage bug, not a crash)."""
    return {"seconds": 1.0, "model": object()}


def _pair(i: int) -> dict[str, Any]:
    return {
        "id": f"p{i}", "prompt": [{"role": "user", "content": f"question {i}"}],
        "chosen": [{"role": "assistant", "content": f"good answer {i}"}],
        "rejected": [{"role": "assistant", "content": f"bad {i}"}],
        "score_chosen": 1.0, "score_rejected": 0.0, "chosen_length": 3, "rejected_length": 2,
        "chosen_chars": 13, "rejected_chars": 5, "ref_chosen_logps": -3.0, "ref_rejected_logps": -2.5,
        "s_ref": -0.5,
    }  # fmt: skip


def _eval_sample(i: int) -> dict[str, Any]:
    return {
        "id": f"e{i}", "instruction": f"task {i}", "output": "out", "baseline_output": "base",
        "preference": 2.0 if i % 2 else 1.0, "output_chars": 3, "baseline_chars": 4, "output_tokens": 1,
    }  # fmt: skip


def artifacts(
    stage: str,
    config: RunConfig,
    *,
    artifact_root: Path,
    run_id: str,
    iteration: int,
    sink: Callable[[dict], None] | None = None,
    model_cache_dir: Path | None = None,
    scratch_dir: Path | None = None,
) -> dict[str, Any]:
    """Writes each stage's artifact in the pipeline's layout (pairs after rank, eval samples and
    pair diagnostics after evaluate) into its scratch folder, so the worker's publishing and
    loading into the store run on real files."""
    from aipo_core.artifacts import write_jsonl_atomic

    assert sink is not None and scratch_dir is not None
    folder = scratch_dir
    sink({"kind": "metric", "step": 1, "values": {f"{stage}/loss": 0.5, "text": "ignored"}})
    if stage == "rank":
        write_jsonl_atomic(folder / "pairs.jsonl", [_pair(i) for i in range(3)])
    if stage == "evaluate":
        write_jsonl_atomic(folder / "eval" / "alpaca_eval.jsonl", [_eval_sample(i) for i in range(2)])
        diagnostics = [{"id": f"p{i}", "s_theta": 0.5 * i, "gradient_weight": 0.25 * i} for i in range(3)]
        write_jsonl_atomic(folder / "pair_diagnostics.jsonl", diagnostics)
        if iteration == 0:  # θ_0, evaluated once, before the policy (aipo_core.pipeline.stage_evaluate)
            write_jsonl_atomic(
                folder / "eval" / "base" / "alpaca_eval.jsonl", [_eval_sample(i) for i in range(3)]
            )
        return {"alpaca_eval": {"win_rate": 50.0, "n": 2}, "note": "text is not a metric"}
    return {"count": 3, "model_cache_dir": str(model_cache_dir)}


def crash_once_while_training(
    stage: str,
    config: RunConfig,
    *,
    artifact_root: Path,
    run_id: str,
    iteration: int,
    sink: Callable[[dict], None] | None = None,
    model_cache_dir: Path | None = None,
    scratch_dir: Path | None = None,
) -> dict[str, Any]:
    """First attempt: logs a loss of 1.0 for steps 1-4, then dies (OOM-like). Later attempts: a
    loss of 2.0 for steps 1-2, and finish."""
    assert sink is not None
    crashed_before = Path(artifact_root) / "crashed-once"
    steps, loss = (range(1, 3), 2.0) if crashed_before.exists() else (range(1, 5), 1.0)
    for step in steps:
        sink({"kind": "metric", "step": step, "values": {"loss": loss}})
    if not crashed_before.exists():
        crashed_before.touch()
        sys.stdout.flush()
        os._exit(9)
    return {"steps": len(steps)}


def exclusive(
    stage: str,
    config: RunConfig,
    *,
    artifact_root: Path,
    run_id: str,
    iteration: int,
    sink: Callable[[dict], None] | None = None,
    model_cache_dir: Path | None = None,
    scratch_dir: Path | None = None,
) -> dict[str, Any]:
    """Holds an exclusive lock on `artifact_root/exclusive.lock` for as long as its process lives
    (the kernel drops it at death, SIGKILL included). An attempt that starts while another is
    still alive cannot take it, and records the overlap in `artifact_root/overlaps`. Logs its
    start in `attempts.log`, runs until `artifact_root/release` exists, then writes
    `output.json` into its scratch folder."""
    import fcntl
    import json

    root = Path(artifact_root)
    lock = open(root / "exclusive.lock", "a")  # noqa: SIM115 - held until the process ends
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        with open(root / "overlaps", "a") as fh:
            fh.write(f"{os.getpid()} {time.time()}\n")
        raise RuntimeError("another attempt of this stage is still running") from None
    with open(root / "attempts.log", "a") as fh:
        fh.write(f"{os.getpid()} {time.time()}\n")
    assert sink is not None and scratch_dir is not None
    step = 0
    while not (root / "release").exists():
        step += 1
        sink({"kind": "metric", "step": step, "values": {"ticks": float(os.getpid())}})
        time.sleep(0.1)
    (scratch_dir / "output.json").write_text(json.dumps({"pid": os.getpid()}))
    return {"pid": os.getpid(), "steps": step}


def unstorable_pairs(
    stage: str,
    config: RunConfig,
    *,
    artifact_root: Path,
    run_id: str,
    iteration: int,
    sink: Callable[[dict], None] | None = None,
    model_cache_dir: Path | None = None,
    scratch_dir: Path | None = None,
) -> dict[str, Any]:
    """The rank stage writes a pairs.jsonl the store refuses (a record without `rejected`)."""
    from aipo_core.artifacts import write_jsonl_atomic

    assert scratch_dir is not None
    if stage == "rank":
        bad = {k: v for k, v in _pair(0).items() if k != "rejected"}
        write_jsonl_atomic(scratch_dir / "pairs.jsonl", [bad])
    return {"count": 1}
