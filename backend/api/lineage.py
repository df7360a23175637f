"""Lineage and comparison: a pair's candidates, an eval prompt across runs, paired run differences.

GET /runs/{id}/iterations/{k}/prompts/{prompt_id}/candidates   every candidate of a prompt
GET /lineage/eval-samples?benchmark=&prompt_id=&run_ids=        one eval prompt across runs
GET /comparisons/paired?benchmark=&run_ids=                     b − a win rate with its paired SE

Candidates are read from the run's artifact folder (backend/store/candidates.py), the rest from
the store. Every request is bounded: at most MAX_COMPARED_RUNS runs, ids and names capped.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from aipo_core.config import POLICY_JUDGE
from aipo_core.eval_summary import BENCHMARK_BASELINES, JudgeInfo, judge_info, verdict
from aipo_core.paired import PairedDifference, paired_difference
from aipo_core.ranking import SELECTION_RULE
from backend.api.common import ERRORS, RunId, load_run, not_found
from backend.deps import SessionDep, SettingsDep, require_token
from backend.schemas import (
    MAX_COMPARED_RUNS,
    MAX_INT32,
    CandidatePublic,
    EvalOutputPublic,
    EvalSampleLineagePublic,
    PairedDifferenceList,
    PairedDifferencePublic,
    PromptCandidatesPublic,
    RunEvalLineagePublic,
    SafeStr,
)
from backend.store.candidates import ArtifactOutsideRun, PromptCandidates, read_prompt_candidates
from backend.store.eval_samples import LatestEvaluation, latest_evaluation, prompt_outputs
from backend.store.models import EvalSample, Pair, Run

router = APIRouter(tags=["lineage"], dependencies=[Depends(require_token)], responses=ERRORS)

PromptId = Annotated[
    SafeStr, Path(min_length=1, max_length=200, description="The prompt's id (a pair's uid).")
]
BenchmarkQ = Annotated[SafeStr, Query(min_length=1, max_length=64)]
RunIdsQ = Annotated[
    list[Annotated[int, Query(ge=1, le=MAX_INT32)]],
    Query(min_length=1, max_length=MAX_COMPARED_RUNS, description="Repeat: run_ids=1&run_ids=2."),
]


def _ranker(run: Run) -> str:
    ranker = run.run_config().ranker
    name = f"{ranker.kind}:{ranker.model}"
    return f"{name} (the policy θ_k judging its own samples)" if ranker.model == POLICY_JUDGE else name


def _candidates(found: PromptCandidates, pair: Pair | None) -> list[CandidatePublic]:
    roles = {found.chosen: "chosen", found.rejected: "rejected"} if found.outcome == "pair" else {}
    ref = {"chosen": pair.ref_chosen_logps, "rejected": pair.ref_rejected_logps} if pair else {}
    return [
        CandidatePublic(
            index=i,
            text=text,
            score=found.scores[i] if found.scores is not None else None,
            length=found.lengths[i] if i < len(found.lengths) else None,
            chars=len(text),
            finished=found.finished[i] if i < len(found.finished) else True,
            role=roles.get(i),
            ref_logps=ref.get(roles.get(i, "")),
        )
        for i, text in enumerate(found.texts)
    ]


@router.get(
    "/runs/{run_id}/iterations/{iteration}/prompts/{prompt_id}/candidates",
    response_model=PromptCandidatesPublic,
    summary="Every candidate of one prompt (lineage of a pair)",
)
def prompt_candidates(
    run_id: RunId,
    iteration: Annotated[int, Path(ge=0, le=MAX_INT32)],
    prompt_id: PromptId,
    session: SessionDep,
    settings: SettingsDep,
) -> PromptCandidatesPublic:
    """The prompt's sampled candidates with the ranker's scores, token lengths, whether each
    stopped at EOS, the pair the rank stage chose (and why) and the reference log-probs of its
    two answers. 404 when the iteration's candidates do not include the prompt."""
    run = load_run(session, run_id)
    try:
        found = read_prompt_candidates(settings.resolved_artifact_root, run_id, iteration, prompt_id)
    except ArtifactOutsideRun:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the artifact lies outside the run's folder") from None
    if found is None:
        raise not_found(f"prompt {prompt_id!r} in the candidates of iteration {iteration} of run {run_id}")
    pair = session.scalars(
        select(Pair).where(Pair.run_id == run_id, Pair.iteration == iteration, Pair.uid == prompt_id)
    ).first()
    return PromptCandidatesPublic(
        run_id=run_id,
        iteration=iteration,
        prompt_id=prompt_id,
        instruction=found.instruction,
        ranker=_ranker(run),
        selection_rule=SELECTION_RULE,
        outcome=found.outcome,
        scores_unavailable_reason=None
        if found.scores is not None or found.outcome is not None
        else "the rank stage has not recorded candidate scores for this iteration",
        pair_id=pair.id if pair else None,
        s_ref=pair.s_ref if pair else None,
        candidates=_candidates(found, pair),
    )


def _load_runs(session: Session, run_ids: list[int]) -> list[Run]:
    return [load_run(session, run_id) for run_id in dict.fromkeys(run_ids)]


def _output(sample: EvalSample, info: JudgeInfo) -> EvalOutputPublic:
    base = sample.evaluated == "base"
    policy_index = 0 if base else sample.iteration + 1
    return EvalOutputPublic(
        evaluated=sample.evaluated,  # type: ignore[arg-type]
        iteration=None if base else sample.iteration,
        policy_index=policy_index,
        judge=info.name(policy_index),
        output=sample.output,
        output_chars=sample.output_chars,
        output_tokens=sample.output_tokens,
        preference=sample.preference,
        verdict=verdict(sample.preference),  # type: ignore[arg-type]
    )


def _run_lineage(run: Run, samples: list[EvalSample]) -> RunEvalLineagePublic:
    config = run.run_config()
    info = judge_info(config)
    return RunEvalLineagePublic(
        run_id=run.id,
        run_name=run.name,
        objective=run.objective,
        judge_label=info.label,
        self_judged=info.self_judged,
        sample_size=config.evaluation.limit,
        eval_seed=config.evaluation.seed,
        outputs=[_output(s, info) for s in samples],
    )


@router.get(
    "/lineage/eval-samples",
    response_model=EvalSampleLineagePublic,
    summary="One evaluation prompt across iterations and runs",
)
def eval_sample_lineage(
    benchmark: BenchmarkQ,
    prompt_id: Annotated[SafeStr, Query(min_length=1, max_length=200)],
    run_ids: RunIdsQ,
    session: SessionDep,
) -> EvalSampleLineagePublic:
    """Each run's answers to the prompt (θ_0, then θ_1 … in order) with the judge's verdict
    against the baseline answer. 404 for an unknown run, or when no run has the prompt."""
    runs = _load_runs(session, run_ids)
    samples = prompt_outputs(session, [r.id for r in runs], benchmark, prompt_id)
    if not samples:
        raise not_found(f"prompt {prompt_id!r} of benchmark {benchmark!r} in runs {[r.id for r in runs]}")
    by_run: dict[int, list[EvalSample]] = {}
    for sample in samples:
        by_run.setdefault(sample.run_id, []).append(sample)
    first = samples[0]
    return EvalSampleLineagePublic(
        benchmark=benchmark,
        prompt_id=prompt_id,
        instruction=first.instruction,
        baseline_output=first.baseline_output,
        baseline_model=BENCHMARK_BASELINES.get(benchmark),
        runs=[_run_lineage(run, by_run[run.id]) for run in runs if run.id in by_run],
    )


@dataclass(frozen=True)
class _Latest:
    """A run's latest evaluation on the benchmark, with who judged it."""

    run: Run
    evaluation: LatestEvaluation | None
    judge: JudgeInfo

    @property
    def judge_name(self) -> str | None:
        return None if self.evaluation is None else self.judge.name(self.evaluation.policy_index)


def _comparison(a: _Latest, b: _Latest) -> PairedDifference:
    """b − a, or why there is none: a missing evaluation, a self-judging policy, another judge."""
    for side in (a, b):
        if side.evaluation is None:
            return PairedDifference(0, None, None, f"run {side.run.id} has no evaluation on this benchmark")
    if a.judge.self_judged or b.judge.self_judged:
        return PairedDifference(0, None, None, "self-judged: each run's policy is a different judge")
    if a.judge_name != b.judge_name:
        return PairedDifference(0, None, None, "judged by different judges: verdicts not on one scale")
    return paired_difference(a.evaluation.preferences, b.evaluation.preferences)  # type: ignore[union-attr]


def _paired(a: _Latest, b: _Latest, benchmark: str) -> PairedDifferencePublic:
    result = _comparison(a, b)
    return PairedDifferencePublic(
        run_a=a.run.id,
        run_b=b.run.id,
        benchmark=benchmark,
        policy_index_a=a.evaluation.policy_index if a.evaluation else None,
        policy_index_b=b.evaluation.policy_index if b.evaluation else None,
        judge_a=a.judge_name,
        judge_b=b.judge_name,
        n_shared=result.n,
        difference=result.difference,
        difference_se=result.se,
        within_noise=result.within_noise,
        unavailable_reason=result.reason,
    )


@router.get(
    "/comparisons/paired",
    response_model=PairedDifferenceList,
    summary="Paired win-rate differences between runs",
)
def paired_comparisons(benchmark: BenchmarkQ, run_ids: RunIdsQ, session: SessionDep) -> PairedDifferenceList:
    """For every pair of the runs (a before b, in the order asked): run b's latest evaluated
    model minus run a's, in win-rate points over the prompts both judged, with the paired SE
    (aipo_core.paired; docs/evaluation.md). Null with a reason when the runs were judged by
    different judges (a self-judging policy is a judge of its own) or share fewer than two
    judged prompts."""
    latest = [
        _Latest(run, latest_evaluation(session, run.id, benchmark), judge_info(run.run_config()))
        for run in _load_runs(session, run_ids)
    ]
    return PairedDifferenceList(items=[_paired(a, b, benchmark) for a, b in combinations(latest, 2)])
