"""How much the placement moves s_ref, and why the rank stage scores with the trainer's placement.

    python bench/sref_placement.py [--pairs 16] [--device cpu|cuda]

SmolLM2-135M-Instruct scores the same preference pairs (AlpacaEval instructions; chosen = the
GPT-4-Turbo answer, rejected = its first sentence; bundled data) under several placements and
compares each with the trainer's own step-0 forward, i.e. the training placement run again at
another batch size (other padding and batch composition, as in a shuffled training batch):

- fp32: the training placement is plain fp32; the difference is pure numerical noise;
- bf16 (training.precision: bf16): the trainer runs fp32 weights under bf16 autocast. Scoring
  with that placement (what the rank stage does) is compared with scoring in fp32 without autocast
  (what the rank stage did before placements) and with weights loaded in bf16 (the inference
  placement).

mean Δ is the systematic offset (what biases β·(s_θ − s_ref) at step 0), mean |Δ| includes the
batch-shape noise that bf16 has whatever the placement.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aipo_core.config import RunConfig  # noqa: E402
from aipo_core.data.benchmarks import load_benchmark  # noqa: E402
from aipo_core.devices import Hardware, Placement, training_placement  # noqa: E402
from aipo_core.models import load_model_and_tokenizer  # noqa: E402
from aipo_core.training import attach_reference_logps  # noqa: E402


def make_pairs(n: int) -> list[dict]:
    """On-topic pairs: the full GPT-4-Turbo answer (first 600 characters) against its first sentence."""
    items = [i for i in load_benchmark("alpaca_eval", limit=4 * n) if i.baseline_output][:n]
    return [
        {
            "prompt": [{"role": "user", "content": item.instruction}],
            "chosen": [{"role": "assistant", "content": item.baseline_output[:600]}],
            "rejected": [{"role": "assistant", "content": item.baseline_output.split(". ")[0] + "."}],
        }
        for item in items
    ]


def score(pairs: list[dict], placement: Placement, batch_size: int) -> list[float]:
    model, tokenizer = load_model_and_tokenizer("smollm2-135m-instruct", placement=placement)
    scored = attach_reference_logps(
        pairs,
        model,
        tokenizer,
        batch_size=batch_size,
        max_prompt_length=256,
        max_length=512,
        placement=placement,
    )
    return [p["s_ref"] for p in scored]


def compare(name: str, values: list[float], step0: list[float]) -> None:
    deltas = [a - b for a, b in zip(values, step0, strict=True)]
    print(
        f"{name:<52} {statistics.fmean(abs(d) for d in deltas):>10.4f} {statistics.fmean(deltas):>+10.4f} "
        f"{max(abs(d) for d in deltas):>9.4f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    hardware = Hardware.probe()
    pairs = make_pairs(args.pairs)
    print(f"SmolLM2-135M-Instruct, {len(pairs)} pairs, device {args.device}")
    print("Δ s = s_ref as stored − the trainer's own step-0 log-ratio (same weights, batch 1 vs 8)")
    print(f"{'precision / s_ref scored with':<52} {'mean |Δ|':>10} {'mean Δ':>10} {'max |Δ|':>9}")
    for precision in ("fp32", "bf16"):
        config = RunConfig.model_validate(
            {
                "name": "s",
                "model": "smollm2-135m-instruct",
                "device": args.device,
                "training": {"precision": precision},
            }
        )
        trainer = training_placement(config, hardware)
        step0 = score(pairs, trainer, batch_size=1)
        compare(
            f"{precision}: the training placement (what the rank stage uses)", score(pairs, trainer, 8), step0
        )
        if precision == "bf16":
            fp32 = Placement(trainer.device, torch.float32, None, gpus=trainer.gpus)
            bf16 = Placement(trainer.device, torch.bfloat16, None, gpus=trainer.gpus)
            compare("bf16: fp32 weights, no autocast", score(pairs, fp32, 8), step0)
            compare("bf16: weights loaded in bf16 (inference placement)", score(pairs, bf16, 8), step0)
    print(f"mean |s_ref| of these pairs: {statistics.fmean(abs(s) for s in step0):.2f} nats")


if __name__ == "__main__":
    main()
