"""Benchmark: the demo's model work on a CPU with transformers' defaults vs what the stages now run.

Two workloads shaped like the demo's (SmolLM2-135M-Instruct, random token ids, left padding):

* prefill — one forward of 8 rows of up to 900 tokens, last-token logits only (an LLM judge's
  batch: AlpacaEval's GPT-4-Turbo answers make its texts long);
* decode — 32 rows (8 prompts × 4 candidates) sampled for 192 new tokens at temperature 0.7 (the
  generate stage), no early EOS, so every configuration decodes exactly the same number of steps.

Each configuration runs in its own child process (OpenMP reads its waiting variables once, when
torch loads), one after the other on the same machine:

* peer: fp32 weights, the model's default attention ("sdpa"), libgomp's default waiting — what a
  plain `from_pretrained` + `generate` script does;
* fp32 with passive waiting (what the CLI set before), then bf16 weights (`precision: auto` on a
  CPU with native bf16, aipo_core.devices.cpu_has_native_bf16), then eager attention while
  decoding (aipo_core.generation.decoding_attention), then a short spin (aipo_cli/openmp.py: what
  the CLI chooses on a quiet machine). `--busy N` runs N CPU-bound processes alongside.

    .venv/bin/python bench/cpu_decoding.py          # ~7 min on 2 quiet cores
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch

from aipo_core.devices import cpu_has_native_bf16
from aipo_core.generation import decoding_attention
from aipo_core.models import load_model_and_tokenizer


def timed(work: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def left_padded(rows: int, longest: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ids, mask [rows, longest]: row i has longest - i * step real tokens, flush right."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(100, 40_000, (rows, longest), generator=generator)
    mask = torch.ones(rows, longest, dtype=torch.long)
    step = longest // (2 * rows)
    for i in range(rows):
        mask[i, : i * step] = 0
    return ids, mask


def prefill(model: torch.nn.Module, rows: int, longest: int) -> Callable[[], object]:
    ids, mask = left_padded(rows, longest, seed=1)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # [rows, longest]
    return lambda: model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1)


def decode(model: torch.nn.Module, rows: int, steps: int, eager: bool) -> Callable[[], object]:
    ids, mask = left_padded(rows, 60, seed=2)

    def run() -> object:
        torch.manual_seed(0)
        never = model.config.vocab_size + 1  # no row ends early: every configuration decodes `steps`
        kwargs = {"do_sample": True, "temperature": 0.7, "top_p": 1.0, "top_k": 0, "eos_token_id": never}
        with decoding_attention(model) if eager else nullcontext():
            return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=steps, **kwargs)

    return run


CONFIGURATIONS = {
    "fp32, sdpa, libgomp default waiting (peer)": ("float32", False, {}),
    "fp32, sdpa, passive waiting (the CLI before)": ("float32", False, {"OMP_WAIT_POLICY": "PASSIVE"}),
    "bf16, sdpa, passive": ("bfloat16", False, {"OMP_WAIT_POLICY": "PASSIVE"}),
    "bf16, eager decoding, passive": ("bfloat16", True, {"OMP_WAIT_POLICY": "PASSIVE"}),
    "bf16, eager decoding, spin 20000 (the CLI, quiet machine)": (
        "bfloat16",
        True,
        {"GOMP_SPINCOUNT": "20000"},
    ),
}


def measure(args: argparse.Namespace) -> dict[str, tuple[float, float]]:
    """One configuration, in this process: {workload: (wall s, CPU s)}."""
    model, _ = load_model_and_tokenizer(args.model, dtype=getattr(torch, args.dtype))
    model.eval()
    with torch.inference_mode():
        prefill(model, 2, 32)()  # warm-up: first-call allocations and kernel selection
        return {
            "prefill": timed(prefill(model, args.prefill_rows, args.prefill_tokens)),
            "decode": timed(decode(model, args.decode_rows, args.decode_steps, args.eager)),
        }


def run_child(
    args: argparse.Namespace, dtype: str, eager: bool, env: dict[str, str]
) -> dict[str, list[float]]:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    command = [sys.executable, __file__, "--child", "--dtype", dtype, "--model", args.model]
    command += ["--decode-rows", str(args.decode_rows), "--decode-steps", str(args.decode_steps)]
    command += ["--prefill-rows", str(args.prefill_rows), "--prefill-tokens", str(args.prefill_tokens)]
    command += ["--eager"] if eager else []
    done = subprocess.run(command, env={**clean, **env}, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--decode-rows", type=int, default=32)
    parser.add_argument("--decode-steps", type=int, default=192)
    parser.add_argument("--prefill-rows", type=int, default=8)
    parser.add_argument("--prefill-tokens", type=int, default=900)
    parser.add_argument("--busy", type=int, default=0, help="CPU-bound processes to run alongside")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--eager", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args)))
        return 0
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, native bf16: {cpu_has_native_bf16()}", end="")
    print(f", {args.busy} busy processes alongside")
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        results = {label: run_child(args, *spec) for label, spec in CONFIGURATIONS.items()}
    finally:
        for hog in hogs:
            hog.kill()
    peer = next(iter(results.values()))
    print(f"\nprefill: {args.prefill_rows} rows × ≤{args.prefill_tokens} tokens; ", end="")
    print(f"decode: {args.decode_rows} rows × {args.decode_steps} steps")
    print("| configuration | prefill wall s | CPU s | vs peer | decode wall s | CPU s | vs peer |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, timings in results.items():
        cells = []
        for work in ("prefill", "decode"):
            wall, cpu = timings[work]
            cells += [f"{wall:.1f}", f"{cpu:.1f}", f"{peer[work][0] / wall:.2f}×"]
        print(f"| {label} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
