"""A run's evaluations as a researcher reads them: θ_0 … θ_K, raw and LC win rate, who judged.

The evaluate stage of iteration k evaluates θ_{k+1} (the policy it trained); iteration 0's also
evaluates θ_0, the base model, before any training counted (`evaluated = "base"`), so every
curve starts at the base model. `policy_index` j names the model θ_j and is the x-axis of a
win-rate curve; iterations keep their own numbering.

LC win rates are computed here, over all of a run's stored evaluations at once, not by the
evaluate stage: a judge without a published length slope gets its slope estimated from all its
judgements on a benchmark (aipo_core.winrate.pooled_win_rates), so a later iteration sharpens the
LC of the earlier ones. The API calls `summarize_evaluations` on the stored eval samples at read
time and `aipo run --local` on the artifacts (`load_run_evaluations`); docs/evaluation.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from aipo_core import artifacts
from aipo_core.config import BASE_JUDGE, POLICY_JUDGE, RunConfig
from aipo_core.winrate import Judgements, WinRateReport, pooled_win_rates

BASE_EVALUATION = "base"
POLICY_EVALUATION = "policy"
EVALUATED = (BASE_EVALUATION, POLICY_EVALUATION)
SELF_JUDGED_LABEL = "self-judged (changes every iteration)"
#: The published PairRM checkpoint (aipo_core.ranking.PAIRRM_HUB_ID; ranking loads torch).
PUBLISHED_PAIRRM = "llm-blender/PairRM"
#: Whose answers each benchmark's baseline is (aipo_core/data/files/SOURCES.md).
BENCHMARK_BASELINES = {
    "alpaca_eval": "gpt4_1106_preview",
    "arena_hard": "gpt-4-0314",
    "mt_bench": "gpt-4 reference answers",
}
_DEFAULT_ANNOTATOR = "weighted_alpaca_eval_gpt4_turbo"


def verdict(preference: float | None) -> str:
    """A judgement in words (AlpacaEval convention: 2 = model output preferred, 1 = baseline,
    1.5 = tie, 0 = legacy tie; fractional preferences lean one way or the other)."""
    if preference is None:
        return "not judged"
    if preference == 0 or preference == 1.5:
        return "tie"
    return "model preferred" if preference > 1.5 else "baseline preferred"


@dataclass(frozen=True)
class JudgeInfo:
    """Who judges a run's evaluations (`evaluation.judge`), for display and for pooling."""

    kind: str
    model: str
    label: str
    self_judged: bool

    def name(self, policy_index: int) -> str:
        """Identity of the judge of θ_j: the same for every j unless the policy judges itself."""
        if self.self_judged:
            return f"{self.kind}:policy θ_{policy_index}"
        return f"{self.kind}:{self.model}"


def judge_info(config: RunConfig) -> JudgeInfo:
    judge = config.evaluation.judge
    if judge.kind == "alpaca_eval":
        annotator = judge.annotator or _DEFAULT_ANNOTATOR
        return JudgeInfo("alpaca_eval", annotator, f"AlpacaEval annotator {annotator}, fixed", False)
    if judge.kind == "pairrm" and judge.model in (BASE_JUDGE, POLICY_JUDGE):
        return JudgeInfo("pairrm", PUBLISHED_PAIRRM, f"{PUBLISHED_PAIRRM}, fixed", False)
    if judge.model == POLICY_JUDGE:
        return JudgeInfo(judge.kind, POLICY_JUDGE, SELF_JUDGED_LABEL, True)
    if judge.model == BASE_JUDGE:
        return JudgeInfo(judge.kind, config.model, f"base model θ_0 ({config.model}), fixed", False)
    return JudgeInfo(judge.kind, judge.model, f"{judge.model}, fixed", False)


@dataclass(frozen=True)
class Evaluation:
    """One model's judged answers on one benchmark, column by column (one entry per prompt).

    `preferences` follow AlpacaEval (1..2, None = not judged); lengths in characters. Columns,
    not records: a 15-iteration run holds 12,880 judgements, read on every API request.
    """

    benchmark: str
    evaluated: str
    iteration: int
    prompt_ids: list[str]
    preferences: list[float | None]
    output_chars: list[int | None]
    baseline_chars: list[int | None]
    output_tokens: list[int | None]

    @classmethod
    def from_records(
        cls, benchmark: str, evaluated: str, iteration: int, records: Sequence[Mapping[str, Any]]
    ) -> Evaluation:
        """From eval/{benchmark}.jsonl records: id, preference, output/baseline chars, output_tokens."""
        return cls(
            benchmark,
            evaluated,
            iteration,
            prompt_ids=[str(r.get("id")) for r in records],
            preferences=[r.get("preference") for r in records],
            output_chars=[r.get("output_chars") for r in records],
            baseline_chars=[r.get("baseline_chars") for r in records],
            output_tokens=[r.get("output_tokens") for r in records],
        )

    @property
    def policy_index(self) -> int:
        """j of the evaluated θ_j: 0 for the base model, k + 1 for iteration k's policy."""
        return 0 if self.evaluated == BASE_EVALUATION else self.iteration + 1

    def judged(self) -> Judgements:
        """The judgements with a preference and both lengths (the rest count as unjudged)."""
        keep = [
            i
            for i, (p, o, b) in enumerate(
                zip(self.preferences, self.output_chars, self.baseline_chars, strict=True)
            )
            if p is not None and o is not None and b is not None
        ]
        return Judgements(
            preferences=[self.preferences[i] for i in keep],
            output_chars=[self.output_chars[i] for i in keep],
            baseline_chars=[self.baseline_chars[i] for i in keep],
            prompt_ids=[self.prompt_ids[i] for i in keep],
        )


@dataclass(frozen=True)
class EvaluationSummary:
    """One evaluation with its metrics; `metrics` is WinRateReport's fields (minus judge) plus
    n_unjudged and avg_tokens, rates in percent, None where undefined."""

    benchmark: str
    evaluated: str
    iteration: int | None
    policy_index: int
    judge: str
    judge_label: str
    self_judged: bool
    baseline_model: str | None
    prompt_ids: list[str]
    metrics: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """One flat JSON-safe dict: the identity fields, then the metrics (shallow: no copies)."""
        identity = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "metrics"}
        return {**identity, **self.metrics}


def _metrics(evaluation: Evaluation, n_judged: int, report: WinRateReport | None) -> dict[str, Any]:
    tokens = [t for t in evaluation.output_tokens if t is not None]
    extra = {
        "n_unjudged": len(evaluation.prompt_ids) - n_judged,
        "avg_tokens": sum(tokens) / len(tokens) if tokens else None,
    }
    if report is None:
        return {"n": 0, "lc_win_rate": None, "lc_unavailable_reason": "no judged prompts", **extra}
    values = {k: v for k, v in report.to_dict().items() if k != "judge"}
    return {**values, **extra}


def summarize_evaluations(evaluations: Sequence[Evaluation], config: RunConfig) -> list[EvaluationSummary]:
    """Every evaluation with raw and LC win rate, ordered by benchmark then θ index.

    Evaluations of one benchmark by one judge are length-controlled together (one slope).
    """
    info = judge_info(config)
    groups: dict[tuple[str, str], list[Evaluation]] = {}
    for evaluation in evaluations:
        key = (evaluation.benchmark, info.name(evaluation.policy_index))
        groups.setdefault(key, []).append(evaluation)
    summaries = []
    for (benchmark, judge), members in groups.items():
        baseline = BENCHMARK_BASELINES.get(benchmark)
        judged = [m.judged() for m in members]
        with_judgements = [k for k, j in enumerate(judged) if j.preferences]
        reports = pooled_win_rates([judged[k] for k in with_judgements], judge=judge, baseline=baseline)
        report_of = dict(zip(with_judgements, reports, strict=True))
        for k, member in enumerate(members):
            summaries.append(
                EvaluationSummary(
                    benchmark=benchmark,
                    evaluated=member.evaluated,
                    iteration=None if member.evaluated == BASE_EVALUATION else member.iteration,
                    policy_index=member.policy_index,
                    judge=judge,
                    judge_label=info.label,
                    self_judged=info.self_judged,
                    baseline_model=baseline,
                    prompt_ids=member.prompt_ids,
                    metrics=_metrics(member, len(judged[k].preferences), report_of.get(k)),
                )
            )
    return sorted(summaries, key=lambda s: (s.benchmark, s.policy_index))


def evaluation_path(iteration_dir: Path, evaluated: str, benchmark: str) -> Path:
    """Where the evaluate stage writes an evaluation: eval/{benchmark}.jsonl, eval/base/… for θ_0."""
    folder = iteration_dir / "eval"
    return (folder / BASE_EVALUATION if evaluated == BASE_EVALUATION else folder) / f"{benchmark}.jsonl"


def load_run_evaluations(artifact_root: Path, run_id: str, config: RunConfig) -> list[Evaluation]:
    """Every evaluation a run has written so far (complete files only: they are written atomically)."""
    found = []
    for k in range(config.iterations):
        folder = artifacts.iteration_dir(artifact_root, run_id, k)
        for benchmark in config.evaluation.benchmarks:
            for evaluated in EVALUATED:
                path = evaluation_path(folder, evaluated, benchmark)
                if path.is_file():
                    found.append(Evaluation.from_records(benchmark, evaluated, k, artifacts.read_jsonl(path)))
    return found
