"""How much the placement moves s_ref, and why the rank stage scores with the trainer's placement.

    python bench/sref_placement.py [--pairs 16] [--device cpu|cuda]

SmolLM2-135M-Instruct scores the same preference pairs (AlpacaEval instructions, the GPT-4-Turbo
answer as chosen and another item's answer as rejected, bundled data) under three placements:

- trainer:   what the trainer runs with training.precision: bf16 (fp32 weights, bf16 autocast);
- fp32:      fp32 weights, no autocast (what the rank stage used before placements existed);
- bf16 load: weights loaded in bf16 (the inference placement).

The trainer's step-0 forward is the `trainer` column computed again with another batch size (so
other padding and batch composition, as in a shuffled training batch). The figure that matters is
mean |Δ s| against it: the stored s_ref should differ from the policy's own step-0 log-ratio only
by numerical noise, and AIPO's α·s_ref term (α = 0.05) is smaller than a placement mismatch.
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
    items = [i for i in load_benchmark("alpaca_eval", limit=4 * n) if i.baseline_output][: n + 1]
    return [
        {
            "prompt": [{"role": "user", "content": item.instruction}],
            "chosen": [{"role": "assistant", "content": item.baseline_output[:1200]}],
            "rejected": [{"role": "assistant", "content": items[k + 1].baseline_output[:1200]}],
        }
        for k, item in enumerate(items[:n])
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    config = RunConfig.model_validate(
        {
            "name": "s",
            "model": "smollm2-135m-instruct",
            "device": args.device,
            "training": {"precision": "bf16"},
        }
    )
    trainer = training_placement(config, Hardware.probe())
    placements = {
        "trainer (fp32 weights, bf16 autocast)": trainer,
        "fp32 (no autocast)": Placement(trainer.device, torch.float32, None, gpus=trainer.gpus),
        "bf16 load": Placement(trainer.device, torch.bfloat16, None, gpus=trainer.gpus),
    }
    pairs = make_pairs(args.pairs)
    step0 = score(pairs, trainer, batch_size=1)  # the trainer's forward, other batches and padding
    print(f"SmolLM2-135M-Instruct, {len(pairs)} pairs, device {args.device}; |Δ s| vs the trainer's step 0")
    print(f"{'s_ref scored with':<40} {'mean |Δ s| nats':>16} {'max |Δ s|':>10}")
    for name, placement in placements.items():
        values = score(pairs, placement, batch_size=8)
        deltas = [abs(a - b) for a, b in zip(values, step0, strict=True)]
        print(f"{name:<40} {statistics.fmean(deltas):>16.4f} {max(deltas):>10.4f}")
    print(f"mean |s_ref| of these pairs: {statistics.fmean(abs(s) for s in step0):.2f} nats")


if __name__ == "__main__":
    main()
