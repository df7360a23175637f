"""Benchmark: the LLM judge with shared prefixes vs one forward per judge text (SmolLM2-135M).

The demo's two judging workloads, on real text from the bundled AlpacaEval set:

* rank — the round robin of the rank stage: 8 prompts × 4 candidates, every pair in both orders
  (8 × 12 = 96 judge texts); the candidates are other prompts' GPT-4-Turbo answers cut to
  `--candidate-words` words, standing in for SmolLM2's answers;
* eval — the evaluate stage's judging: 12 prompts, an answer of `--answer-words` words against the
  prompt's own GPT-4-Turbo answer, in both orders (24 judge texts).

Peer ("separate"): the judge before shared prefixes, i.e. texts in their given order, `batch_size`
per left-padded forward. Ours: `LLMJudgeRanker.prob_first_better` (aipo_core.shared_prefix). Both
run in this process on the same model; the table gives wall-clock and process CPU seconds (all
threads), the token positions each runs through the model (padding included: the work, whatever
the machine's load) and the largest difference between the two probabilities.

    .venv/bin/python bench/judge.py
"""

from __future__ import annotations

import argparse
import os
import time

from aipo_cli.openmp import configure_openmp_waiting

configure_openmp_waiting()  # as the aipo CLI does (before torch loads)

import torch  # noqa: E402

from aipo_core.data.benchmarks import load_benchmark  # noqa: E402
from aipo_core.models import inference, load_model_and_tokenizer  # noqa: E402
from aipo_core.ranking import LLMJudgeRanker, _shared_start_groups  # noqa: E402
from aipo_core.shared_prefix import forward_tokens  # noqa: E402


def cut(text: str, words: int) -> str:
    return " ".join(text.split()[:words])


def separate_forwards(judge: LLMJudgeRanker, prompts, firsts, seconds) -> list[float]:
    """The judge as it was: every text its own row, batches in the given order."""
    texts = [
        judge.tokenizer.apply_chat_template(
            [{"role": "user", "content": judge.template.format(instruction=p, response_a=a, response_b=b)}],
            add_generation_prompt=True,
            tokenize=False,
        )
        for p, a, b in zip(prompts, firsts, seconds, strict=True)
    ]
    out: list[float] = []
    with inference(judge.model):
        for start in range(0, len(texts), judge.batch_size):
            encoded = judge.tokenizer(
                texts[start : start + judge.batch_size],
                add_special_tokens=False,
                padding=True,
                padding_side="left",
                return_tensors="pt",
            )
            mask = encoded["attention_mask"]  # [b, L]
            logits = judge.model(
                input_ids=encoded["input_ids"],
                attention_mask=mask,
                position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                logits_to_keep=1,
            ).logits[:, -1, :]  # [b, V]
            out.extend(judge._prob_a(logits))
    return out


def workloads(candidate_words: int, answer_words: int) -> dict[str, tuple[list[str], list[str], list[str]]]:
    items = [item for item in load_benchmark("alpaca_eval") if item.baseline_output]
    rank_prompts, rank_a, rank_b = [], [], []
    for p in range(8):
        candidates = [cut(items[100 + 4 * p + j].baseline_output, candidate_words) for j in range(4)]
        for j in range(4):
            for k in range(4):
                if j != k:  # both orders of every pair, as pairwise_preferences asks them
                    rank_prompts.append(items[p].instruction)
                    rank_a.append(candidates[j])
                    rank_b.append(candidates[k])
    eval_items = items[200:212]
    answers = [cut(items[300 + i].baseline_output, answer_words) for i in range(len(eval_items))]
    baselines = [item.baseline_output for item in eval_items]
    instructions = [item.instruction for item in eval_items]
    return {
        "rank (8 prompts x 4 candidates, 96 texts)": (rank_prompts, rank_a, rank_b),
        "eval (12 prompts vs baseline, 24 texts)": (
            instructions + instructions,
            answers + baselines,
            baselines + answers,
        ),
    }


def tokens_run(judge: LLMJudgeRanker, prompts, firsts, seconds) -> tuple[int, int]:
    """Token positions (padding included) each way runs through the model: separate, shared."""
    texts = [
        judge.tokenizer.apply_chat_template(
            [{"role": "user", "content": judge.template.format(instruction=p, response_a=a, response_b=b)}],
            add_generation_prompt=True,
            tokenize=False,
        )
        for p, a, b in zip(prompts, firsts, seconds, strict=True)
    ]
    sequences = judge.tokenizer(texts, add_special_tokens=False)["input_ids"]
    size = judge.batch_size
    separate = sum(
        len(sequences[i : i + size]) * max(len(s) for s in sequences[i : i + size])
        for i in range(0, len(sequences), size)
    )
    shared = forward_tokens(sequences, _shared_start_groups(prompts, firsts), max_rows=size)
    return separate, shared


def timed(fn) -> tuple[list[float], float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidate-words", type=int, default=80)
    parser.add_argument("--answer-words", type=int, default=70)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    model, tokenizer = load_model_and_tokenizer("smollm2-135m-instruct")
    judge = LLMJudgeRanker(model, tokenizer, batch_size=args.batch_size)
    waiting = {k: os.environ.get(k, "unset") for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    print(f"torch threads {torch.get_num_threads()}, OpenMP waiting {waiting}")
    header = "| workload | tokens run separate / shared | separate wall s | separate CPU s | shared wall s |"
    print(header + " shared CPU s | CPU ratio | max diff |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, rows in workloads(args.candidate_words, args.answer_words).items():
        base, base_wall, base_cpu = timed(lambda rows=rows: separate_forwards(judge, *rows))
        ours, wall, cpu = timed(lambda rows=rows: judge.prob_first_better(*rows))
        diff = max(abs(a - b) for a, b in zip(base, ours, strict=True))
        separate, shared = tokens_run(judge, *rows)
        print(
            f"| {name} | {separate:,} / {shared:,} | {base_wall:.1f} | {base_cpu:.1f} | {wall:.1f} | "
            f"{cpu:.1f} | {base_cpu / cpu:.2f}x | {diff:.1e} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
