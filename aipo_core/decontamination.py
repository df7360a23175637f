"""Decontamination: no evaluation prompt, and no earlier iteration's instruction, becomes training data.

A training prompt is contaminated when it matches a prompt of any bundled benchmark (every
AlpacaEval instruction, both MT-Bench turns, every Arena-Hard prompt), whichever benchmarks the run
evaluates on: a run may be evaluated on another benchmark later, and a prompt seen in training
makes every later number on it meaningless. "Matches" is either criterion:

- normalised exact match: equal after Unicode NFKC, case folding and dropping everything but
  word characters (so whitespace, punctuation and capitalisation differences do not hide a copy);
- ROUGE-L F1 ≥ 0.7 (rouge-score semantics, `aipo_core.rouge`): near-paraphrases, the threshold
  self-instruct uses for de-duplication.

The same two criteria keep an iteration from re-training on an earlier iteration's instructions.
The pipeline applies the rule to every prompt pool (at load), every imported preference set and
every generated or topped-up instruction, and counts what it drops per reason (`REASONS`).

The benchmark index is built once per process (`benchmark_index`, ~0.1 s for 1,465 prompts);
a check then takes ~0.2 ms per prompt (bench/decontamination.py).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from functools import cache
from typing import Any

from aipo_core.rouge import RougeDeduplicator

ROUGE_THRESHOLD = 0.7
# Why a prompt was dropped, in the order the checks run.
REASONS = ("benchmark_exact", "benchmark_similar", "earlier_iteration")

_WORD = re.compile(r"\w+")


def normalize(text: str) -> str:
    """The form compared for exact matches: NFKC, case-folded, word characters joined by spaces."""
    return " ".join(_WORD.findall(unicodedata.normalize("NFKC", text).casefold()))


class PromptIndex:
    """A growing set of prompts answering "is this text one of them, exactly or nearly?"."""

    def __init__(self, prompts: Iterable[str] = (), threshold: float = ROUGE_THRESHOLD) -> None:
        self._exact: set[str] = set()
        self._similar = RougeDeduplicator((), threshold, inclusive=True)
        for prompt in prompts:
            self.add(prompt)

    def __len__(self) -> int:
        return len(self._similar)

    def add(self, prompt: str) -> None:
        self._exact.add(normalize(prompt))
        self._similar.add(prompt)

    def match(self, text: str) -> str | None:
        """Which match `text` is: "exact", "similar" (ROUGE-L ≥ threshold) or None."""
        if normalize(text) in self._exact:
            return "exact"
        if self._similar.is_duplicate(text):
            return "similar"
        return None


def benchmark_prompts() -> list[str]:
    """Every user turn of every bundled benchmark (AlpacaEval 805, MT-Bench 80×2, Arena-Hard 500)."""
    from aipo_core.data.benchmarks import BENCHMARKS, load_benchmark

    return [turn for name in BENCHMARKS for item in load_benchmark(name) for turn in item.turns]


@cache
def benchmark_index() -> PromptIndex:
    """The index of `benchmark_prompts`, built once per process (read-only afterwards)."""
    return PromptIndex(benchmark_prompts())


class Decontaminator:
    """The decontamination rule for one iteration: benchmark prompts plus earlier instructions."""

    def __init__(self, earlier_instructions: Iterable[str] = (), *, benchmarks: PromptIndex | None = None):
        self.benchmarks = benchmarks if benchmarks is not None else benchmark_index()
        self.earlier = PromptIndex(earlier_instructions)

    def benchmark_reason(self, text: str) -> str | None:
        """Which benchmark match `text` is: "benchmark_exact", "benchmark_similar" or None."""
        found = self.benchmarks.match(text)
        return f"benchmark_{found}" if found else None

    def reason(self, text: str) -> str | None:
        """The first `REASONS` entry `text` falls under, or None when it is clean."""
        return self.benchmark_reason(text) or ("earlier_iteration" if self.earlier.match(text) else None)

    def clean_prompts(self, prompts: Sequence[str]) -> tuple[list[str], dict[str, int]]:
        """A prompt pool without benchmark prompts, and how many were dropped per reason.

        Only benchmarks count here: a pool prompt an earlier iteration trained on is still a fine
        few-shot example; it is just not handed out again (see `reason`)."""
        kept: list[str] = []
        counts = dict.fromkeys(REASONS, 0)
        for prompt in prompts:
            if found := self.benchmark_reason(prompt):
                counts[found] += 1
            else:
                kept.append(prompt)
        return kept, counts

    def clean_pairs(self, pairs: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """Preference pairs none of whose user turns is contaminated, and drops per reason."""
        kept: list[dict[str, Any]] = []
        counts = dict.fromkeys(REASONS, 0)
        for pair in pairs:
            found = next(filter(None, map(self.reason, user_turns(pair["prompt"]))), None)
            if found:
                counts[found] += 1
            else:
                kept.append(pair)
        return kept, counts


def user_turns(prompt: str | Sequence[dict[str, str]]) -> list[str]:
    """The user messages of a conversational prompt (a plain-string prompt is one user turn)."""
    if isinstance(prompt, str):
        return [prompt]
    return [message["content"] for message in prompt if message.get("role") == "user"]
