"""Benchmark: batched N-candidate generation vs one candidate at a time (HF backend).

Three ways to get N candidates for each of P prompts from the same model:

* sequential — one prompt, one candidate per `generate` call (P·N calls);
* batched    — `batch_size` prompts per call, `num_return_sequences=N` (each prompt prefilled N times);
* shared     — batched, plus one prefill per prompt whose KV cache is repeated N times
               (what `HFGenerator` does by default).

Throughput is generated tokens (EOS excluded) per wall-clock second; each mode samples with
its own seed stream, so token counts differ slightly and tokens/s is the fair comparison.

    .venv/bin/python bench/generate.py                      # SmolLM2-135M-Instruct, ~2 min on 2 CPU cores
    .venv/bin/python bench/generate.py --context-words 300 --max-new-tokens 8   # prefill-heavy
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from aipo_core.access import ModelAccess
from aipo_core.generation import GenerationResult, HFGenerator
from aipo_core.models import load_model_and_tokenizer

INSTRUCTIONS = [
    "Give three tips for staying healthy.",
    "Explain how photosynthesis works in simple terms.",
    "Write a short poem about the sea.",
    "What is the difference between a list and a tuple in Python?",
    "Suggest a title for a story about a lost dog who finds its way home.",
    "Rewrite this sentence to sound more polite: Send me the report now.",
    "List five fruits that are rich in vitamin C.",
    "Summarize the plot of Romeo and Juliet in two sentences.",
]

CONTEXT = (
    "The committee met on Tuesday to review the quarterly report. Sales grew in the north and fell "
    "slightly in the south, while costs stayed flat. The team agreed to revisit pricing next month."
)


def _prompt_text(index: int, context_words: int) -> str:
    """An instruction, optionally after a long context: long prompts show what prefill sharing saves."""
    instruction = INSTRUCTIONS[index % len(INSTRUCTIONS)]
    if context_words <= 0:
        return instruction
    filler = " ".join(CONTEXT.split() * (context_words // len(CONTEXT.split()) + 1))
    return f"Context: {' '.join(filler.split()[:context_words])}\n\n{instruction}"


def _sample(
    generator: HFGenerator, prompts: list, args: argparse.Namespace, n: int, seed: int
) -> GenerationResult:
    return generator.generate(
        prompts,
        num_candidates=n,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        seed=seed,
    )


def run_sequential(model, tokenizer, prompts: list, args: argparse.Namespace) -> dict:
    """N separate one-candidate passes over the prompts, one prompt per call."""
    generator = HFGenerator(model, tokenizer, batch_size=1)
    started, tokens = time.perf_counter(), 0
    for k in range(args.num_candidates):
        tokens += _sample(generator, prompts, args, n=1, seed=args.seed + 1 + k).generated_tokens
    return {"tokens": tokens, "seconds": time.perf_counter() - started}


def run_batched(model, tokenizer, prompts: list, args: argparse.Namespace, *, share_prefill: bool) -> dict:
    generator = HFGenerator(model, tokenizer, batch_size=args.batch_size, share_prefill=share_prefill)
    started = time.perf_counter()
    result = _sample(generator, prompts, args, n=args.num_candidates, seed=args.seed)
    return {"tokens": result.generated_tokens, "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--num-candidates", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--context-words", type=int, default=0, help="prepend this many words of context to each prompt"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    # The person running the benchmark chose the model: any hub id or path, never remote code.
    model, tokenizer = load_model_and_tokenizer(args.model, access=ModelAccess.for_local_run())
    model.eval()
    prompts = [
        [{"role": "user", "content": INSTRUCTIONS[i % len(INSTRUCTIONS)]}] for i in range(args.prompts)
    ]
    _sample(HFGenerator(model, tokenizer, batch_size=1), prompts[:1], args, n=1, seed=args.seed)  # warm-up

    modes = {
        "sequential": run_sequential(model, tokenizer, prompts, args),
        "batched": run_batched(model, tokenizer, prompts, args, share_prefill=False),
        "shared": run_batched(model, tokenizer, prompts, args, share_prefill=True),
    }
    for stats in modes.values():
        stats["tokens_per_s"] = stats["tokens"] / stats["seconds"]
    base = modes["sequential"]["tokens_per_s"]
    report = {
        "model": args.model,
        "device": str(model.device),
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "prompts": args.prompts,
        "num_candidates": args.num_candidates,
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "modes": modes,
        "speedup_batched": modes["batched"]["tokens_per_s"] / base,
        "speedup_shared": modes["shared"]["tokens_per_s"] / base,
    }
    print(f"{'mode':<11} {'tokens':>7} {'seconds':>8} {'tokens/s':>9} {'speedup':>8}")
    for name, stats in modes.items():
        tokens, seconds, rate = stats["tokens"], stats["seconds"], stats["tokens_per_s"]
        print(f"{name:<11} {tokens:>7} {seconds:>8.1f} {rate:>9.1f} {rate / base:>7.2f}x")
    print(json.dumps(report))
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2)


if __name__ == "__main__":
    main()
