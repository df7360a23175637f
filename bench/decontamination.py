"""Benchmark: decontaminating training prompts against every bundled benchmark prompt.

The rule (`aipo_core.decontamination`) drops a prompt that matches any of the 1,465 benchmark
prompts (AlpacaEval 805, MT-Bench 80 × 2 turns, Arena-Hard 500) by normalised exact match or by
ROUGE-L F1 ≥ 0.7. Two ways to answer it for a batch of instructions:

* ours — `Decontaminator.reason`: a set lookup, then `RougeDeduplicator`'s inverted index (bag-of-
  words upper bound on F1 for every reference at once), then rouge-score's LCS only for the
  references that can still reach 0.7;
* peer — `rouge_score.rouge_scorer.RougeScorer(["rougeL"]).score` against every benchmark prompt
  (what one writes with the library alone); it is timed on `--peer-sample` instructions and its
  per-instruction time extrapolated, since all of them take minutes.

The instructions: the bundled pool (175 prompts, all clean) plus `--synthetic` generated-looking
ones built from benchmark prompts (word drops, prefixes, shuffles: about half contaminated).
Both methods must give the same verdict on the peer sample (half contaminated, half clean).

    .venv/bin/python bench/decontamination.py
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time

from rouge_score import rouge_scorer

from aipo_core.data import load_prompt_pool
from aipo_core.decontamination import ROUGE_THRESHOLD, Decontaminator, benchmark_index, benchmark_prompts


def synthetic_instructions(prompts: list[str], count: int, seed: int) -> list[str]:
    """Generated-instruction stand-ins derived from short benchmark prompts (≤ 60 words)."""
    rng = random.Random(seed)
    short = [p for p in prompts if len(p.split()) <= 60]
    out = []
    for _ in range(count):
        words = rng.choice(short).split()
        kind = rng.randrange(3)
        if kind == 0:
            out.append(" ".join(w for w in words if rng.random() > 0.25))
        elif kind == 1:
            out.append(" ".join(words[: max(3, len(words) * rng.randint(4, 9) // 10)]))
        else:
            out.append(" ".join(rng.sample(words, len(words))))
    return out


def peer_verdict(scorer: rouge_scorer.RougeScorer, references: list[str], text: str) -> bool:
    return any(scorer.score(ref, text)["rougeL"].fmeasure >= ROUGE_THRESHOLD - 1e-9 for ref in references)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--synthetic", type=int, default=200)
    parser.add_argument("--peer-sample", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    started = time.perf_counter()
    references = benchmark_prompts()
    index = benchmark_index()
    build_s = time.perf_counter() - started
    decontaminator = Decontaminator(benchmarks=index)

    instructions = load_prompt_pool("self_instruct_seeds") + synthetic_instructions(
        references, args.synthetic, args.seed
    )
    started = time.perf_counter()
    verdicts = [decontaminator.benchmark_reason(text) for text in instructions]
    ours_s = time.perf_counter() - started

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    # Half contaminated, half clean, so that agreement means something for both verdicts.
    rng = random.Random(args.seed)
    dirty = [i for i, v in enumerate(verdicts) if v is not None]
    clean = [i for i, v in enumerate(verdicts) if v is None]
    sample = rng.sample(dirty, args.peer_sample // 2) + rng.sample(
        clean, args.peer_sample - args.peer_sample // 2
    )
    peer_times, agree = [], 0
    for i in sample:
        t0 = time.perf_counter()
        similar = peer_verdict(scorer, references, instructions[i])
        peer_times.append(time.perf_counter() - t0)
        # The peer has no exact-match step; a copy scores F1 = 1 anyway (or has no ASCII words).
        agree += similar == (verdicts[i] is not None)
    peer_per_instruction = statistics.mean(peer_times)
    ours_per_instruction = ours_s / len(instructions)
    result = {
        "machine": platform.processor() or platform.machine(),
        "benchmark_prompts": len(references),
        "instructions": len(instructions),
        "contaminated": sum(v is not None for v in verdicts),
        "index_build_s": round(build_s, 3),
        "ours_total_s": round(ours_s, 3),
        "ours_ms_per_instruction": round(1000 * ours_per_instruction, 3),
        "peer_ms_per_instruction": round(1000 * peer_per_instruction, 1),
        "peer_total_s_extrapolated": round(peer_per_instruction * len(instructions), 1),
        "speedup": round(peer_per_instruction / ours_per_instruction, 1),
        "peer_sample": args.peer_sample,
        "verdicts_agree_on_sample": f"{agree}/{args.peer_sample}",
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
