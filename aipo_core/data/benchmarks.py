"""Evaluation benchmarks shipped with the package: AlpacaEval 2.0, MT-Bench and Arena-Hard.

Each loader turns its benchmark's own file layout into a list of `BenchmarkItem`, pairing every
instruction with the baseline answer it is judged against (see files/SOURCES.md):
- alpaca_eval: GPT-4-Turbo (gpt4_1106_preview) outputs, the AlpacaEval 2.0 reference;
- arena_hard: GPT-4-0314 answers, the Arena-Hard v0.1 baseline;
- mt_bench: the GPT-4 reference answer to the first turn, which exists for the 30 math,
  reasoning and coding questions only (None elsewhere).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, get_args

from aipo_core.config import BenchmarkName
from aipo_core.data.jsonl import bundled_file, iter_jsonl, read_json

BENCHMARKS: tuple[str, ...] = get_args(BenchmarkName)


@dataclass(frozen=True)
class BenchmarkItem:
    """One evaluation prompt.

    `instruction` is the first user turn; `turns` holds every user turn (two for MT-Bench, just the
    instruction elsewhere). `baseline_output` is the answer a judged output is compared with, None
    where the benchmark has none for this item.
    """

    id: str
    instruction: str
    baseline_output: str | None
    category: str
    turns: tuple[str, ...] = ()


def load_benchmark(name: str, limit: int | None = None) -> list[BenchmarkItem]:
    """The first `limit` items (all when None) of a bundled benchmark, in the benchmark's order."""
    if name not in _LOADERS:
        raise ValueError(f"benchmark {name!r} is unknown; expected one of {', '.join(BENCHMARKS)}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative integer or None, got {limit!r}")
    items = _LOADERS[name]()
    return list(items if limit is None else items[:limit])


def load_judge_prompts() -> dict[str, dict[str, Any]]:
    """MT-Bench's LLM-judge prompts (FastChat judge_prompts.jsonl) keyed by name, e.g. "pair-v2"
    or "single-math-v1"; each has system_prompt, prompt_template, output_format, type, category."""
    return {
        row["name"]: row for _, row in iter_jsonl(bundled_file("benchmarks/mt_bench/judge_prompts.jsonl"))
    }


@cache
def _alpaca_eval() -> tuple[BenchmarkItem, ...]:
    rows = read_json(bundled_file("benchmarks/alpaca_eval/gpt4_1106_preview_outputs.json"))
    return tuple(
        BenchmarkItem(
            id=str(index),
            instruction=row["instruction"],
            baseline_output=row["output"],
            category=row["dataset"],
            turns=(row["instruction"],),
        )
        for index, row in enumerate(rows)
    )


@cache
def _mt_bench() -> tuple[BenchmarkItem, ...]:
    references = {
        row["question_id"]: row["choices"][0]["turns"][0]
        for _, row in iter_jsonl(bundled_file("benchmarks/mt_bench/reference_answer_gpt-4.jsonl"))
    }
    return tuple(
        BenchmarkItem(
            id=str(row["question_id"]),
            instruction=row["turns"][0],
            baseline_output=references.get(row["question_id"]),
            category=row["category"],
            turns=tuple(row["turns"]),
        )
        for _, row in iter_jsonl(bundled_file("benchmarks/mt_bench/question.jsonl"))
    )


@cache
def _arena_hard() -> tuple[BenchmarkItem, ...]:
    answers = {
        row["uid"]: _assistant_text(row["messages"][-1]["content"])
        for _, row in iter_jsonl(bundled_file("benchmarks/arena_hard/gpt-4-0314.jsonl"))
    }
    return tuple(
        BenchmarkItem(
            id=row["uid"],
            instruction=row["prompt"],
            baseline_output=answers.get(row["uid"]),
            category=row["cluster"],
            turns=(row["prompt"],),
        )
        for _, row in iter_jsonl(bundled_file("benchmarks/arena_hard/question.jsonl"))
    )


def _assistant_text(content: str | dict[str, Any]) -> str:
    """Arena-Hard's newer answer files wrap the text as ``{"answer": ...}``; older ones are plain."""
    return content["answer"] if isinstance(content, dict) else content


_LOADERS: dict[str, Callable[[], tuple[BenchmarkItem, ...]]] = {
    "alpaca_eval": _alpaca_eval,
    "mt_bench": _mt_bench,
    "arena_hard": _arena_hard,
}
