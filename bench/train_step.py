"""Training-step throughput and peak memory: our AIPO trainer vs TRL's DPOTrainer, same model and data.

Three runs on SmolLM2-135M-Instruct (models.load_model_and_tokenizer("smollm2-135m-instruct")),
the same synthetic conversational pairs, batch, max_length, optimiser and precision:

- ours         train_policy(objective=aipo) on pairs whose reference log-probs were stored first
               by attach_reference_logps (one model in memory, one forward per batch);
- trl-precomp  trl.DPOTrainer(loss_type=["sigmoid"], precompute_ref_log_probs=True): TRL scores
               the reference itself before training, then trains without a reference model;
- trl-online   trl.DPOTrainer(loss_type=["sigmoid"]) with ref_model = a second copy of the model,
               scored on every step (TRL's default setup).

Reference scoring before training is not timed for any run. Each run is a fresh subprocess. The
first optimiser step is a warm-up; the measurement covers steps 2..N+1, delimited by the
Trainer's per-step log (logging_steps=1 everywhere):
- pairs/s = batch / median step time (the median resists other jobs on a shared machine; the
  best step is printed too);
- peak memory = the process's peak resident set during those steps (VmHWM, reset through
  /proc/self/clear_refs after the warm-up step; weights, gradients, AdamW state, activations and,
  for trl-online, the reference copy all count), shown absolute and above the resident set
  measured after imports, before any model was loaded. glibc's mmap threshold is pinned at
  128 KiB so freed buffers leave the resident set at once. Linux only.

    python bench/train_step.py                    # batch 4, length 128, 4 measured steps
    python bench/train_step.py --steps 10 --batch 8 --length 256
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = ("ours", "trl-precomp", "trl-online")
WORDS = (
    "the a model answer question simple clear because first then finally example data result "
    "water light energy plant sun leaf cell city river history language number list table "
    "explain describe compare improve quickly carefully important different useful small large"
).split()
TOPICS = [
    "Explain how photosynthesis works.",
    "Give three tips for staying healthy.",
    "Describe the history of Paris.",
    "Compare lists and tuples in Python.",
    "Write a short poem about the sea.",
]


def rss_mib(field: str) -> float:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


def synthetic_pairs(count: int, response_words: int, seed: int = 0) -> list[dict]:
    """Deterministic TRL conversational pairs; responses long enough to reach max_length."""
    rng = random.Random(seed)

    def text(n: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."

    return [
        {
            "prompt": [{"role": "user", "content": f"{TOPICS[i % len(TOPICS)]} {text(8)}"}],
            "chosen": [{"role": "assistant", "content": text(response_words)}],
            "rejected": [{"role": "assistant", "content": text(response_words * 3 // 4)}],
        }
        for i in range(count)
    ]


class StepMeter:
    """Called once per optimiser step (at the Trainer's log); the first call starts the window."""

    def __init__(self) -> None:
        self.marks: list[float] = []
        self.rss_at_start = 0.0

    def mark(self) -> None:
        self.marks.append(time.perf_counter())
        if len(self.marks) == 1:  # end of the warm-up step
            Path("/proc/self/clear_refs").write_text("5")
            self.rss_at_start = rss_mib("VmRSS")

    def summary(self, batch: int) -> dict:
        step_times = [b - a for a, b in zip(self.marks, self.marks[1:], strict=False)]
        median = statistics.median(step_times)
        return {
            "steps": len(step_times),
            "pairs_per_s": batch / median,
            "median_step_s": median,
            "best_step_s": min(step_times),
            "peak_rss_mib": rss_mib("VmHWM"),
            "rss_at_window_start_mib": self.rss_at_start,
        }


def run_ours(args, pairs, meter: StepMeter) -> None:
    from aipo_core.config import ObjectiveConfig, TrainingConfig
    from aipo_core.models import load_model_and_tokenizer
    from aipo_core.training import attach_reference_logps, train_policy

    model, tokenizer = load_model_and_tokenizer("smollm2-135m-instruct")
    training = TrainingConfig(
        batch_size=args.batch,
        max_steps=args.steps + 1,
        max_length=args.length,
        max_prompt_length=args.length // 2,
        learning_rate=args.lr,
        precision="fp32" if args.device == "cpu" else "auto",
    )
    scored = attach_reference_logps(
        pairs,
        model,
        tokenizer,
        batch_size=args.batch,
        max_prompt_length=training.max_prompt_length,
        max_length=args.length,
        precision=training.precision,
    )

    def sink(event: dict) -> None:
        if event["kind"] == "metric":
            meter.mark()

    with tempfile.TemporaryDirectory() as out:
        train_policy(
            model,
            tokenizer,
            scored,
            objective=ObjectiveConfig(name="aipo"),
            training=training,
            output_dir=Path(out) / "policy",
            seed=0,
            sink=sink,
        )


def run_trl(args, pairs, meter: StepMeter, *, online: bool) -> None:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from aipo_core.models import load_model_and_tokenizer

    class Mark(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "train_runtime" not in logs:
                meter.mark()

    model, tokenizer = load_model_and_tokenizer("smollm2-135m-instruct")
    ref_model = load_model_and_tokenizer("smollm2-135m-instruct")[0] if online else None
    with tempfile.TemporaryDirectory() as out:
        config = DPOConfig(
            output_dir=out,
            loss_type=["sigmoid"],
            beta=0.1,
            precompute_ref_log_probs=not online,
            per_device_train_batch_size=args.batch,
            max_steps=args.steps + 1,
            max_length=args.length,
            learning_rate=args.lr,
            warmup_steps=0.1,
            lr_scheduler_type="cosine",
            optim="adamw_torch",
            bf16=args.device != "cpu",
            gradient_checkpointing=False,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            dataloader_pin_memory=args.device != "cpu",
            seed=0,
            data_seed=0,
        )
        trainer = DPOTrainer(
            model=model,
            ref_model=ref_model,
            args=config,
            train_dataset=Dataset.from_list(pairs),
            processing_class=tokenizer,
            callbacks=[Mark()],
        )
        trainer.train()


def worker(args) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    baseline = rss_mib("VmRSS")  # imports done, no model yet
    pairs = synthetic_pairs(args.batch * (args.steps + 1), args.response_words)
    meter = StepMeter()
    if args.run == "ours":
        run_ours(args, pairs, meter)
    else:
        run_trl(args, pairs, meter, online=args.run == "trl-online")
    print(json.dumps({**meter.summary(args.batch), "baseline_rss_mib": baseline}))


def run_isolated(args, run: str) -> dict:
    command = [sys.executable, __file__, "--worker", run]
    for name in ("steps", "batch", "length", "response_words", "lr", "threads", "device"):
        command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{run} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=4, help="measured optimiser steps (after 1 warm-up)")
    parser.add_argument("--batch", type=int, default=4, help="pairs per step")
    parser.add_argument("--length", type=int, default=128, help="max_length (prompt + response tokens)")
    parser.add_argument("--response-words", type=int, default=120, help="words per chosen response")
    parser.add_argument("--lr", type=float, default=5e-7)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    parser.add_argument("--device", default="cpu", help="cpu (fp32) or cuda (bf16)")
    parser.add_argument("--runs", default=",".join(RUNS), help="comma-separated subset of " + ", ".join(RUNS))
    parser.add_argument("--worker", choices=RUNS, dest="run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        worker(args)
        return

    print(
        f"SmolLM2-135M-Instruct, batch={args.batch} pairs, max_length={args.length}, "
        f"{args.steps} measured steps"
    )
    header = (
        f"{'run':<12} {'pairs/s':>8} {'median step s':>14} {'best step s':>12} {'peak RSS MiB':>13} "
        f"{'above baseline MiB':>19}"
    )
    print(header)
    print("-" * len(header))
    results = {}
    for run in args.runs.split(","):
        r = results[run] = run_isolated(args, run)
        r["above_baseline_mib"] = r["peak_rss_mib"] - r["baseline_rss_mib"]
        print(
            f"{run:<12} {r['pairs_per_s']:>8.3f} {r['median_step_s']:>14.2f} {r['best_step_s']:>12.2f} "
            f"{r['peak_rss_mib']:>13,.0f} {r['above_baseline_mib']:>19,.0f}"
        )
    print()
    for peer, target in (
        ("trl-precomp", "pairs/s >= 0.95x, memory <= 1.05x"),
        ("trl-online", "pairs/s >= 1.3x"),
    ):
        if "ours" not in results or peer not in results:
            continue
        ours, other = results["ours"], results[peer]
        speed = ours["pairs_per_s"] / other["pairs_per_s"]
        memory = ours["above_baseline_mib"] / other["above_baseline_mib"]
        absolute = ours["peak_rss_mib"] / other["peak_rss_mib"]
        print(
            f"ours / {peer}: pairs/s {speed:.2f}x, peak memory {memory:.2f}x above baseline "
            f"({absolute:.2f}x absolute); target {target}"
        )


if __name__ == "__main__":
    main()
