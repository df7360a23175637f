"""The fixed evaluation sample: which benchmark prompts every evaluation of a run answers.

`evaluation.limit` prompts are drawn once per (benchmark, limit, evaluation.seed), stratified by
the benchmark's own source field (`BenchmarkItem.category`: AlpacaEval `dataset`, MT-Bench
`category`, Arena-Hard `cluster`), so the sample mirrors the benchmark's mix instead of its first
rows (AlpacaEval's first 129 are all `helpful_base`). The draw depends on nothing else: every
iteration, θ_0 included, and every run with the same evaluation seed answer the same prompts, so
comparisons between them are paired. Only prompts with a baseline answer are drawn from (MT-Bench
has GPT-4 references for math, reasoning and coding only).

Allocation is proportional with largest remainders (Hamilton's method), ties broken by the seeded
generator; within a stratum prompts are drawn without replacement. Arena-Hard has 250 clusters of
2 prompts, so a sample smaller than 250 takes at most one prompt per cluster, from random clusters.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from aipo_core.data.benchmarks import BenchmarkItem, load_benchmark

#: The benchmark field each category comes from (docs/evaluation.md).
STRATUM_FIELDS = {"alpaca_eval": "dataset", "mt_bench": "category", "arena_hard": "cluster"}


@dataclass(frozen=True)
class EvalSample:
    """The prompts one benchmark is evaluated on, and how they were chosen."""

    benchmark: str
    items: list[BenchmarkItem]
    seed: int
    limit: int | None
    n_available: int
    strata: dict[str, int]
    notes: list[str] = field(default_factory=list)

    @property
    def prompt_ids(self) -> list[str]:
        return [item.id for item in self.items]

    def describe(self) -> dict[str, object]:
        """JSON-safe description, written next to the evaluation artifacts (eval/sample.json)."""
        return {
            "seed": self.seed,
            "limit": self.limit,
            "stratified_by": STRATUM_FIELDS.get(self.benchmark, "category"),
            "n_available": self.n_available,
            "strata": self.strata,
            "prompt_ids": self.prompt_ids,
            "notes": self.notes,
        }


def _allocate(sizes: dict[str, int], limit: int, rng: np.random.Generator) -> dict[str, int]:
    """Per-stratum counts summing to `limit`: floor of the proportional share, then one more for
    the largest remainders (ties in random order)."""
    total = sum(sizes.values())
    names = sorted(sizes)
    quotas = np.array([limit * sizes[name] / total for name in names])  # [S]
    counts = np.floor(quotas).astype(int)
    remainders = quotas - counts
    tiebreak = rng.random(len(names))
    order = np.lexsort((tiebreak, -remainders))  # largest remainder first
    counts[order[: limit - int(counts.sum())]] += 1
    return {name: int(count) for name, count in zip(names, counts, strict=True)}


def stratified_sample(items: Sequence[BenchmarkItem], limit: int | None, seed: int) -> list[BenchmarkItem]:
    """`limit` items stratified by `category`, in the benchmark's order; all of them when
    `limit` is None or not smaller than their number."""
    if limit is None or limit >= len(items):
        return list(items)
    if limit < 1:
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    rng = np.random.default_rng(seed)
    by_stratum: dict[str, list[int]] = {}
    for position, item in enumerate(items):
        by_stratum.setdefault(item.category, []).append(position)
    counts = _allocate({name: len(members) for name, members in by_stratum.items()}, limit, rng)
    chosen: list[int] = []
    for name in sorted(by_stratum):
        members = by_stratum[name]
        chosen.extend(int(i) for i in rng.choice(members, size=counts[name], replace=False))
    return [items[i] for i in sorted(chosen)]


def evaluation_sample(benchmark: str, limit: int | None, seed: int) -> EvalSample:
    """The run's fixed sample of `benchmark` (see the module doc)."""
    every = load_benchmark(benchmark)
    judgeable = [item for item in every if item.baseline_output]
    notes = []
    if len(judgeable) < len(every):
        notes.append(
            f"{benchmark}: {len(every) - len(judgeable)} of {len(every)} prompts have no baseline/reference "
            "output and are never evaluated"
        )
    items = stratified_sample(judgeable, limit, seed)
    return EvalSample(
        benchmark=benchmark,
        items=items,
        seed=seed,
        limit=limit,
        n_available=len(judgeable),
        strata=dict(sorted(Counter(item.category for item in items).items())),
        notes=notes,
    )
