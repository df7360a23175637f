"""/runs/{id}/iterations, /stages and a stage's log: what the worker is doing right now."""

from __future__ import annotations

from pathlib import Path as FsPath
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import PlainTextResponse

from aipo_core.eval_summary import BASE_EVALUATION, judge_info
from backend.api.common import ERRORS, RunId, load_run, not_found
from backend.deps import SessionDep, SettingsDep, require_token
from backend.evaluations import run_evaluation_summaries
from backend.schemas import (
    MAX_INT32,
    EvaluationPublic,
    IterationList,
    IterationPublic,
    PairStatsPublic,
    StageList,
    StagePublic,
)
from backend.store.metrics import eval_metrics_by_iteration
from backend.store.models import Stage
from backend.store.pairs import pair_stats_by_iteration
from backend.store.stages import list_stages, stage_log_path

router = APIRouter(prefix="/runs", tags=["progress"], dependencies=[Depends(require_token)], responses=ERRORS)
Iteration = Annotated[int | None, Query(ge=0, le=MAX_INT32)]


def iteration_status(statuses: list[str]) -> str:
    """One status for an iteration from its stages' statuses (worst/most active wins)."""
    for status in ("failed", "cancelled", "running", "queued"):
        if status in statuses:
            return status
    if all(s in ("succeeded", "skipped") for s in statuses):
        return "succeeded"
    return "running" if any(s in ("succeeded", "skipped") for s in statuses) else "pending"


def _policy_metrics(metrics: dict[str, float | None]) -> dict[str, float | None]:
    """The evaluate stage's flat metrics of θ_{k+1} only (θ_0's 'base/…' keys are served apart)."""
    return {k: v for k, v in metrics.items() if BASE_EVALUATION not in k.split("/")}


def _with_run_level_lc(metrics: dict[str, float | None], evaluations: dict[str, EvaluationPublic]):
    """Flat metrics with the win rates of `evaluations` (LC recomputed over the run) written over."""
    merged = dict(metrics)
    for benchmark, ev in evaluations.items():
        for key in ("win_rate", "win_rate_se", "lc_win_rate", "lc_win_rate_se", "avg_length"):
            merged[f"{benchmark}/{key}"] = getattr(ev, key)
    return merged


@router.get("/{run_id}/iterations", response_model=IterationList, summary="Iterations with eval metrics")
def list_iterations(run_id: RunId, session: SessionDep) -> IterationList:
    """Per iteration: status, stage statuses, the evaluation of the policy it trained (θ_{k+1}),
    and pair statistics; plus θ_0's evaluation (`base_evaluations`), where every curve starts.

    Raw and length-controlled win rates come with their SEs and the judge; LC is computed now
    from every stored evaluation of the run (docs/evaluation.md), null with a reason when the
    judgements cannot support it.
    """
    run = load_run(session, run_id)
    config = run.run_config()
    stages = list_stages(session, run_id)
    evals = eval_metrics_by_iteration(session, run_id)
    pair_stats = pair_stats_by_iteration(session, run_id)
    summaries = run_evaluation_summaries(session, run)
    base: dict[str, EvaluationPublic] = {}
    by_iteration: dict[int, dict[str, EvaluationPublic]] = {}
    for summary in summaries:
        public = EvaluationPublic.model_validate(summary.to_dict())
        if summary.iteration is None:
            base[summary.benchmark] = public
        else:
            by_iteration.setdefault(summary.iteration, {})[summary.benchmark] = public
    items = []
    for it in run.iterations:
        own = [s for s in stages if s.iteration == it.index]
        stats = pair_stats.get(it.index)
        evaluations = by_iteration.get(it.index, {})
        items.append(
            IterationPublic(
                index=it.index,
                status=iteration_status([s.status for s in own]),  # type: ignore[arg-type]
                started_at=it.started_at,
                finished_at=it.finished_at,
                stages={s.name: s.status for s in own},  # type: ignore[misc]
                eval_metrics=_with_run_level_lc(_policy_metrics(evals.get(it.index, {})), evaluations),
                pair_stats=PairStatsPublic(**stats) if stats else None,  # type: ignore[arg-type]
                evaluations=evaluations,
            )
        )
    judge = judge_info(config)
    return IterationList(
        items=items, base_evaluations=base, judge_label=judge.label, self_judged=judge.self_judged
    )


@router.get("/{run_id}/stages", response_model=StageList, summary="Stages with live progress")
def get_stages(run_id: RunId, session: SessionDep, iteration: Iteration = None) -> StageList:
    """Every stage in execution order with status, attempt, progress (0–1), heartbeat and errors."""
    load_run(session, run_id)
    return StageList(items=[StagePublic.model_validate(s) for s in list_stages(session, run_id, iteration)])


def _log_file(stage: Stage, artifact_root: FsPath) -> FsPath:
    return (
        FsPath(stage.log_path)
        if stage.log_path
        else stage_log_path(artifact_root, stage.run_id, stage.iteration, stage.name)
    )


@router.get(
    "/{run_id}/stages/{stage_id}/log",
    response_class=PlainTextResponse,
    summary="A stage's log (tail)",
    responses={200: {"content": {"text/plain": {"example": "step 1/50 loss=0.693\n"}}}},
)
def get_stage_log(
    run_id: RunId,
    stage_id: Annotated[int, Path(ge=1, le=MAX_INT32)],
    session: SessionDep,
    settings: SettingsDep,
    tail_bytes: Annotated[
        int, Query(ge=1, le=16 * 1024 * 1024, description="Return at most the last N bytes.")
    ] = 65536,
) -> PlainTextResponse:
    """The log file the worker writes for this stage; 404 until the stage has started logging."""
    load_run(session, run_id)
    stage = session.get(Stage, stage_id)
    if stage is None or stage.run_id != run_id:
        raise not_found(f"stage {stage_id} of run {run_id}")
    path = _log_file(stage, settings.resolved_artifact_root)
    if not path.is_file():
        raise not_found(f"log of stage {stage_id}")
    with path.open("rb") as fh:
        size = fh.seek(0, 2)
        fh.seek(max(0, size - tail_bytes))
        data = fh.read(tail_bytes)
    return PlainTextResponse(data.decode("utf-8", errors="replace"))
