"""Multi-process training: the train stage under `accelerate launch`, one process per GPU.

The stage process writes a spec file and runs `accelerate launch --multi_gpu --num_processes N
-m aipo_core.distributed SPEC` as a plain child (same process group: the worker's cancel signals
reach the launcher). accelerate starts the ranks through torch's elastic agent, which gives every
rank a session of its own, so a group kill alone would not reach them: each rank therefore dies
with its parent (`PR_SET_PDEATHSIG`, plus a watchdog thread where that is unavailable), and a
SIGTERM to the launcher makes it stop its ranks.

Every rank loads θ_k with its share of the placement (DDP: its own GPU; FSDP / ZeRO-3: sharded by
the Trainer), reads the same pairs and runs `train_policy`, which splits the global batch evenly
over the ranks (accelerate's seedable sampler keeps the order of one process, so N processes see
the same global batches as one). Only rank 0 writes the metric events (forwarded live to the
stage's sink), the result and, through `train_policy`, the checkpoint. On CPU the ranks talk over
gloo, which is how the equality with a one-process run is tested.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aipo_core import artifacts
from aipo_core.config import ObjectiveConfig, RunConfig, TrainingConfig
from aipo_core.devices import Placement

Sink = Callable[[dict[str, Any]], None]
_PR_SET_PDEATHSIG = 1


# ----------------------------------------------------------------------------- stage side


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_command(placement: Placement, spec_path: Path, *, port: int | None = None) -> list[str]:
    """`accelerate launch` for `placement.num_processes` local processes of this module.

    `--multi_gpu` selects torch's launcher on CPU hosts too (accelerate's `--cpu` path starts one
    process unless MPI is set up); the ranks pick gloo themselves when their placement is CPU.
    FSDP / ZeRO-3 are configured by the Trainer's arguments, not by launcher flags.
    """
    precision = "bf16" if placement.autocast_dtype is not None else "no"
    return [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes", str(placement.num_processes),
        "--num_machines", "1",
        "--machine_rank", "0",
        "--main_process_ip", "127.0.0.1",
        "--main_process_port", str(port or _free_port()),
        "--mixed_precision", precision,
        "--dynamo_backend", "no",
        "-m", "aipo_core.distributed", str(spec_path),
    ]  # fmt: skip


def _forward_events(path: Path, offset: int, sink: Sink | None) -> int:
    """Send the complete new lines of `path` (from byte `offset`) to `sink`; the new offset."""
    if not path.exists():
        return offset
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read()
    complete = data[: data.rfind(b"\n") + 1]
    if sink is not None:
        for line in complete.splitlines():
            if line.strip():
                sink(json.loads(line))
    return offset + len(complete)


def train_distributed(
    *,
    model: str,
    config: RunConfig,
    pairs_path: Path,
    output_dir: Path,
    placement: Placement,
    seed: int,
    workdir: Path,
    sink: Sink | None = None,
    model_cache_dir: Path | None = None,
    poll_s: float = 0.5,
) -> tuple[int, dict[str, float]]:
    """Run the train stage over `placement.num_processes` processes; (optimiser steps, metrics)."""
    if placement.strategy == "deepspeed_zero3" and importlib.util.find_spec("deepspeed") is None:
        raise ImportError(
            "training.strategy: deepspeed_zero3 needs DeepSpeed on the worker (pip install deepspeed); "
            "training.strategy: fsdp shards the same way without it"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    events, result = workdir / "train_ranks.events.jsonl", workdir / "train_ranks.result.json"
    for stale in (events, result):
        stale.unlink(missing_ok=True)
    spec = {
        "model": model,
        "config": config.model_dump(mode="json"),
        "pairs": str(pairs_path),
        "output_dir": str(output_dir),
        "placement": placement.to_json(),
        "seed": seed,
        "events": str(events),
        "result": str(result),
        "model_cache_dir": str(model_cache_dir) if model_cache_dir else None,
    }
    spec_path = artifacts.write_json_atomic(workdir / "train_ranks.spec.json", spec)
    # Same process group as this stage process: a cancel's killpg reaches the launcher, whose
    # SIGTERM handler stops the ranks; the ranks also die with the launcher (see module doc).
    launcher = subprocess.Popen(launch_command(placement, spec_path))
    offset = 0
    try:
        while launcher.poll() is None:
            offset = _forward_events(events, offset, sink)
            time.sleep(poll_s)
    finally:
        if launcher.poll() is None:  # this process is being torn down: take the ranks with it
            launcher.send_signal(signal.SIGTERM)
            launcher.wait(timeout=30)
    _forward_events(events, offset, sink)
    if launcher.returncode != 0 or not result.exists():
        raise RuntimeError(
            f"distributed training ({placement.num_processes} × {placement.strategy} on "
            f"{placement.device}) failed with exit status {launcher.returncode}; the ranks' "
            "tracebacks are in the stage log"
        )
    outcome = artifacts.read_json(result)
    return int(outcome["steps"]), dict(outcome["metrics"])


# ----------------------------------------------------------------------------- rank side


def die_with_parent() -> None:
    """End this process as soon as its parent (the launcher's agent) is gone."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not Linux: the watchdog below is the only guard
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class _EventFile:
    """Rank 0's sink: one JSON line per event, flushed (the stage process tails the file)."""

    def __init__(self, path: Path) -> None:
        self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def __call__(self, event: dict[str, Any]) -> None:
        self._fh.write(json.dumps(event, default=float) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def run_rank(spec: dict[str, Any]) -> None:
    """One training process: load θ_k on this rank's device, train, rank 0 reports."""
    import tempfile

    from accelerate import PartialState

    from aipo_core.models import load_model_and_tokenizer
    from aipo_core.training import dpo_config, train_policy

    config = RunConfig.model_validate(spec["config"])
    training: TrainingConfig = config.training
    objective: ObjectiveConfig = config.objective
    placement = Placement.from_json(spec["placement"])
    # cpu=True gives gloo over the launcher's env (MULTI_CPU); on GPUs accelerate picks NCCL.
    state = PartialState(cpu=placement.device == "cpu")
    mine = placement.for_rank(state.local_process_index)
    with tempfile.TemporaryDirectory(prefix="aipo-rank-") as scratch:
        # Before loading: under ZeRO-3 the arguments make from_pretrained load sharded.
        args = dpo_config(training, objective, scratch, spec["seed"], mine)
        model, tokenizer = load_model_and_tokenizer(
            spec["model"],
            trust_remote_code=config.trust_remote_code,
            cache_dir=spec.get("model_cache_dir"),
            placement=mine,
        )
        sink = _EventFile(Path(spec["events"])) if state.is_main_process else None
        try:
            result = train_policy(
                model,
                tokenizer,
                artifacts.read_jsonl(spec["pairs"]),
                objective=objective,
                training=training,
                output_dir=Path(spec["output_dir"]),
                seed=spec["seed"],
                sink=sink,
                placement=mine,
                args=args,
            )
        finally:
            if sink is not None:
                sink.close()
    if state.is_main_process:
        artifacts.write_json_atomic(Path(spec["result"]), {"steps": result.steps, "metrics": result.metrics})
    state.wait_for_everyone()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m aipo_core.distributed SPEC.json", file=sys.stderr)
        return 2
    die_with_parent()
    run_rank(artifacts.read_json(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
