"""What durable artifacts cost: the same writes with fsync (ours) and with os.fsync made a no-op.

Three measurements, each alternating fsync on/off for `--repeats` rounds (median reported):
- the train stage's largest write: `save_policy` of SmolLM2-135M-Instruct (model + tokenizer,
  ~540 MB fp32) through `atomic_dir`;
- a pairs file of 20,000 pairs through `write_jsonl_atomic`;
- one whole real stage: `run_stage("train")` on tiny-random-llama (outputs published from its
  scratch folder, marker last), on pairs produced by the same pipeline beforehand.

    .venv/bin/python bench/artifact_fsync.py [--repeats 3]

The peer is the same code without fsync (what the artifacts module did before): the ratio is
the price of surviving a power loss. Timings include the page cache's write-back only where
fsync forces it, so they depend on the disk; this script prints what it measured.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from aipo_core import artifacts
from aipo_core.config import RunConfig
from aipo_core.pipeline import STAGES, run_stage

TINY = {
    "name": "fsync-bench",
    "model": "tiny-random-llama",
    "iterations": 1,
    "self_instruct": {"num_instructions": 4, "max_new_tokens": 8, "max_attempts_factor": 1},
    "generation": {"num_candidates": 2, "max_new_tokens": 8},
    "ranker": {"kind": "llm_judge", "model": "policy"},
    "training": {"batch_size": 2, "max_steps": 2, "max_prompt_length": 96, "max_length": 128},
    "evaluation": {"benchmarks": ["alpaca_eval"], "limit": 2, "max_new_tokens": 8},
}


@contextmanager
def fsync_disabled():
    real = os.fsync
    os.fsync = lambda fd: None  # type: ignore[assignment]
    try:
        yield
    finally:
        os.fsync = real


def timed(action: Callable[[Path], None], scratch: Path, *, fsync: bool) -> float:
    folder = Path(tempfile.mkdtemp(dir=scratch))
    os.sync()  # start every round with nothing dirty in the page cache
    started = time.perf_counter()
    if fsync:
        action(folder)
    else:
        with fsync_disabled():
            action(folder)
    elapsed = time.perf_counter() - started
    shutil.rmtree(folder)
    return elapsed


def compare(name: str, action: Callable[[Path], None], scratch: Path, repeats: int) -> None:
    on, off = [], []
    for _ in range(repeats):
        on.append(timed(action, scratch, fsync=True))
        off.append(timed(action, scratch, fsync=False))
    with_fsync, without = statistics.median(on), statistics.median(off)
    print(
        f"| {name} | {with_fsync:.3f} s | {without:.3f} s | {with_fsync - without:+.3f} s "
        f"| {with_fsync / without:.2f}× |",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="aipo-fsync-bench-"))
    try:
        from aipo_core.models import load_model_and_tokenizer
        from aipo_core.training import save_policy

        model, tokenizer = load_model_and_tokenizer("smollm2-135m-instruct")
        pairs = [
            {"prompt": [{"role": "user", "content": f"question {i} " * 20}],
             "chosen": [{"role": "assistant", "content": f"a good answer {i} " * 40}],
             "rejected": [{"role": "assistant", "content": f"a bad answer {i} " * 30}],
             "ref_chosen_logps": -30.0, "ref_rejected_logps": -35.0, "s_ref": 5.0}
            for i in range(20_000)
        ]  # fmt: skip
        config = RunConfig.model_validate(TINY)
        prepared = scratch / "prepared"
        for stage in STAGES[:3]:
            run_stage(stage, config, artifact_root=prepared, run_id="r", iteration=0)

        def train_stage(folder: Path) -> None:
            shutil.copytree(artifacts.run_dir(prepared, "r"), artifacts.run_dir(folder, "r"))
            run_stage("train", config, artifact_root=folder, run_id="r", iteration=0)

        print("| write | with fsync | without | cost | ratio |\n|---|---:|---:|---:|---:|")

        def save(folder: Path) -> None:
            save_policy(model, tokenizer, folder / "policy")

        def write_pairs(folder: Path) -> None:
            artifacts.write_jsonl_atomic(folder / "pairs.jsonl", pairs)

        compare("SmolLM2-135M `save_policy` (atomic_dir)", save, scratch, args.repeats)
        compare("20,000 pairs `write_jsonl_atomic`", write_pairs, scratch, args.repeats)
        compare('tiny-random-llama `run_stage("train")`', train_stage, scratch, args.repeats)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
