"""GPU smoke test and figures, one script for a GPU host (about 5–8 minutes on one H100/H200).

    python bench/gpu_smoke.py            # on a CUDA host, after: pip install -c constraints.txt -e '.[gpu]'
    python bench/gpu_smoke.py --cpu      # the CPU-only path (CI): tiny model, no vLLM

It runs, and asserts on:
1. one AIPO iteration (self_instruct → generate → rank → train → evaluate) on SmolLM2-135M in bf16
   with the HF backend: every stage's recorded placement is on CUDA, and the trainer's first-step
   log-ratios (log πθ − log π_ref, whatever the objective) are ~0, i.e. s_ref was computed exactly as the
   trainer computes its step-0 forward;
2. the same with generation.backend: vllm, which must give the GPU back: after the generate stage
   and after the evaluate stage (whose evaluated models answer through vLLM too) the device's used
   memory is back within 1 GiB of what it was before; in both iterations the evaluate stage must
   have loaded each model only once every earlier one was gone (`model_lifetimes`);
3. bench/train_step.py and bench/logprobs.py on CUDA;
and prints one summary table: train pairs/s, peak GPU memory, model FLOPs utilisation (6·N FLOPs
per trained token against the card's dense bf16 peak), vLLM and HF generation tokens/s.
Exit status 1 on any failed check.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aipo_core.config import RunConfig  # noqa: E402
from aipo_core.pipeline import STAGES, run_stage  # noqa: E402

# Dense bf16 tensor-core peaks from the vendors' datasheets (SXM parts), FLOP/s.
PEAK_BF16_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10": 125e12,
    "L4": 121e12,
}
BETA = 0.1


def _config(args: argparse.Namespace, backend: str) -> RunConfig:
    return RunConfig.model_validate(
        {
            "name": f"gpu-smoke-{backend}",
            "model": args.model,
            "iterations": 1,
            "device": "cpu" if args.cpu else "cuda",
            "self_instruct": {
                "num_instructions": args.prompts,
                "max_new_tokens": 48,
                "max_attempts_factor": 2,
            },
            "generation": {
                "backend": backend,
                "num_candidates": 4,
                "max_new_tokens": args.new_tokens,
                "temperature": 0.8,
                "gpu_memory_utilization": 0.5,
                # A machinery check, not a result: random weights (--cpu) almost never emit EOS and
                # short budgets cut SmolLM2 off, so truncated candidates are paired here too.
                "keep_unfinished": True,
            },
            "objective": {"name": "aipo", "beta": BETA},
            "training": {
                "batch_size": 8,
                "max_steps": args.train_steps,
                "warmup_ratio": 0.0,
                "learning_rate": 1e-6,
                "max_prompt_length": 256,
                "max_length": 512,
                "precision": "fp32" if args.cpu else "bf16",
            },
            "evaluation": {"benchmarks": ["alpaca_eval"], "limit": 4, "max_new_tokens": 32},
        }
    )


def _used_gib() -> float:
    free, total = torch.cuda.mem_get_info()
    return (total - free) / 2**30


def _peak_flops() -> float | None:
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else ""
    return next((flops for key, flops in PEAK_BF16_FLOPS.items() if key in name), None)


class Smoke:
    """Runs the checks, keeps the failures and the figures."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.failures: list[str] = []
        self.figures: list[tuple[str, str]] = []

    def check(self, ok: bool, what: str) -> None:
        print(("PASS " if ok else "FAIL ") + what, flush=True)
        if not ok:
            self.failures.append(what)

    def iteration(self, backend: str, root: Path) -> None:
        config = _config(self.args, backend)
        events: list[dict[str, Any]] = []
        summaries: dict[str, dict[str, Any]] = {}
        device = "cpu" if self.args.cpu else "cuda"
        for stage in STAGES:
            before = _used_gib() if device == "cuda" else 0.0
            if stage == "train" and device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            started = time.perf_counter()
            summaries[stage] = run_stage(
                stage, config, artifact_root=root, run_id=backend, iteration=0, sink=events.append
            )
            print(f"  {backend}/{stage}: {time.perf_counter() - started:.1f} s", flush=True)
            placement = summaries[stage].get("placement") or {}
            self.check(
                str(placement.get("device", "")).startswith(device), f"{backend}/{stage} ran on {device}"
            )
            if stage in ("generate", "evaluate") and backend == "vllm":
                after = _used_gib()
                self.check(
                    after <= before + 1.0,
                    f"vllm/{stage} gave the GPU back ({before:.1f} → {after:.1f} GiB used)",
                )
            if stage == "generate" and backend == "vllm":
                self.figures.append(("vLLM generation tokens/s", f"{summaries[stage]['tokens_per_s']:,.0f}"))
            if stage == "evaluate":
                self._lifetimes(backend, summaries[stage])
            if stage == "generate" and backend == "hf":
                self.figures.append(("HF generation tokens/s", f"{summaries[stage]['tokens_per_s']:,.0f}"))
            if stage == "train" and device == "cuda":
                self.figures.append(
                    ("train peak GPU memory (GiB)", f"{torch.cuda.max_memory_allocated() / 2**30:.2f}")
                )
        self._step0(backend, events)
        if backend == "hf":
            self._training_figures(summaries["train"], config)

    def _lifetimes(self, backend: str, evaluate: dict[str, Any]) -> None:
        """Each model of the evaluate stage loaded only once every earlier one was gone."""
        lifetimes = evaluate.get("model_lifetimes") or []
        leaked = [(t["model"], t["role"], t["alive_at_load"]) for t in lifetimes if t["alive_at_load"]]
        loads = ", ".join(f"{t['model']} for {t['role']}" for t in lifetimes)
        self.check(
            bool(lifetimes) and not leaked,
            f"{backend}/evaluate held one model at a time ({loads})"
            + (f"; leaked: {leaked}" if leaked else ""),
        )

    def _step0(self, backend: str, events: list[dict[str, Any]]) -> None:
        first = next(
            (e["values"] for e in events if e.get("kind") == "metric" and "margins" in e["values"]), None
        )
        if first is None:
            self.check(False, f"{backend}: the trainer reported no step")
            return
        worst = max(abs(first[k]) for k in ("log_ratio_chosen", "log_ratio_rejected"))
        tolerance = 1e-3 if self.args.cpu else 0.05
        self.check(
            worst < tolerance, f"{backend}: step-0 log-ratio {worst:.2e} nats < {tolerance} (s_ref ≈ policy)"
        )

    def _training_figures(self, train: dict[str, Any], config: RunConfig) -> None:
        from aipo_core.models import resolve_model_path
        from aipo_core.preflight import model_shape

        pairs_per_s = train.get("train_samples_per_second")
        self.figures.append(
            ("train pairs/s (pipeline)", f"{pairs_per_s:.2f}" if pairs_per_s else "unavailable")
        )
        runtime, tokens = train.get("train_runtime"), train.get("num_tokens")
        peak = _peak_flops()
        if not runtime or not tokens:
            mfu = "unavailable (no token count)"
        elif peak is None:
            mfu = "unavailable (no peak FLOP/s known for this device)"
        else:
            parameters = model_shape(resolve_model_path(config.model)).parameters
            mfu = f"{100 * 6 * parameters * tokens / runtime / peak:.1f}%"
        self.figures.append(("train MFU (6·N·tokens/s ÷ peak bf16)", mfu))

    def bench(self, script: str, arguments: list[str]) -> None:
        command = [sys.executable, str(ROOT / "bench" / script), *arguments]
        print("$ " + " ".join(command[1:]), flush=True)
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        print(done.stdout[-4000:], flush=True)
        self.check(
            done.returncode == 0,
            f"bench/{script} ran" + ("" if done.returncode == 0 else done.stderr[-2000:]),
        )

    def summary(self) -> None:
        device = "CPU" if self.args.cpu else torch.cuda.get_device_name()
        width = max((len(k) for k, _ in self.figures), default=10)
        print(f"\n=== gpu_smoke summary: {device}, torch {torch.__version__} ===")
        for key, value in self.figures:
            print(f"{key:<{width}}  {value}")
        print(f"checks failed: {len(self.failures)}")
        for failure in self.failures:
            print(f"  - {failure}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cpu", action="store_true", help="CPU-only path: tiny model, fp32, no vLLM (CI)")
    parser.add_argument(
        "--model", default=None, help="default: smollm2-135m-instruct (GPU), tiny-random-llama (--cpu)"
    )
    parser.add_argument("--prompts", type=int, default=None, help="instructions per iteration")
    parser.add_argument("--new-tokens", type=int, default=None, help="max new tokens per candidate")
    parser.add_argument("--train-steps", type=int, default=None)
    parser.add_argument("--skip-bench", action="store_true", help="only the iterations")
    args = parser.parse_args()
    args.model = args.model or ("tiny-random-llama" if args.cpu else "smollm2-135m-instruct")
    args.prompts = args.prompts or (4 if args.cpu else 64)
    args.new_tokens = args.new_tokens or (16 if args.cpu else 128)
    args.train_steps = args.train_steps or (2 if args.cpu else 8)
    if not args.cpu and not torch.cuda.is_available():
        print("no CUDA device: run with --cpu for the CPU-only path", file=sys.stderr)
        return 2
    smoke = Smoke(args)
    with tempfile.TemporaryDirectory(prefix="gpu-smoke-") as root:
        smoke.iteration("hf", Path(root))
        if args.cpu:
            smoke.figures.append(("vLLM", "skipped: --cpu (vLLM needs a CUDA GPU)"))
        elif importlib.util.find_spec("vllm") is None:
            smoke.check(False, "vllm is installed (pip install -c constraints.txt -e '.[gpu]')")
        else:
            smoke.iteration("vllm", Path(root))
    if not args.skip_bench:
        if args.cpu:
            smoke.bench(
                "logprobs.py", ["--batch", "2", "--length", "128", "--vocab", "4096", "--hidden", "64"]
            )
            smoke.bench("train_step.py", ["--steps", "1", "--batch", "2", "--length", "64", "--runs", "ours"])
        else:
            smoke.bench("logprobs.py", ["--device", "cuda"])
            smoke.bench("logprobs.py", ["--device", "cuda", "--backward"])
            smoke.bench(
                "train_step.py", ["--device", "cuda", "--batch", "8", "--length", "512", "--steps", "8"]
            )
    smoke.summary()
    print(json.dumps({"failures": smoke.failures, "figures": dict(smoke.figures)}))
    return 1 if smoke.failures else 0


if __name__ == "__main__":
    sys.exit(main())
