"""Helpers shared by the route modules: error responses, lookups, cursors, conversions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import HTTPException, Path, status
from sqlalchemy.orm import Session

from aipo_core.eval_summary import EvaluationSummary
from backend.evaluations import latest_evaluations
from backend.schemas import MAX_INT32, ErrorPublic, RunEvaluationPublic, RunProgressPublic, RunPublic
from backend.store.models import Run
from backend.store.runs import RunProgress, run_progress

RunId = Annotated[int, Path(ge=1, le=MAX_INT32, description="Run id.")]

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorPublic, "description": "Missing or invalid bearer token."},
    404: {"model": ErrorPublic, "description": "Not found."},
}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorPublic, "description": "Not allowed in the run's current status."}
}


def not_found(what: str) -> HTTPException:
    return HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=f"{what} not found")


def conflict(message: str) -> HTTPException:
    return HTTPException(status_code=status.HTTP_409_CONFLICT, detail=message)


def bad_cursor(message: str) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        detail=[{"type": "value_error", "loc": ["query", "cursor"], "msg": message, "input": None}],
    )


def load_run(session: Session, run_id: int) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise not_found(f"run {run_id}")
    return run


def _progress(progress: RunProgress | None) -> RunProgressPublic | None:
    if progress is None:
        return None
    return RunProgressPublic(
        stages_done=progress.done,
        stages_total=progress.total,
        fraction=progress.done / progress.total if progress.total else 0.0,
        current_stage=progress.current_stage,
        current_iteration=progress.current_iteration,
    )


def _latest_evaluation(run: Run, summary: EvaluationSummary | None) -> RunEvaluationPublic | None:
    if summary is None:
        return None
    seed = run.run_config().evaluation.seed
    return RunEvaluationPublic.model_validate({**summary.to_dict(), "seed": seed})


def runs_public(session: Session, runs: list[Run]) -> list[RunPublic]:
    """Runs with their progress and latest evaluation (at most four queries for the whole page)."""
    progress = run_progress(session, [r.id for r in runs])
    latest = latest_evaluations(session, runs)
    return [
        RunPublic.model_validate(run).model_copy(
            update={
                "progress": _progress(progress.get(run.id)),
                "latest_evaluation": _latest_evaluation(run, latest.get(run.id)),
            }
        )
        for run in runs
    ]


def run_public(session: Session, run: Run) -> RunPublic:
    return runs_public(session, [run])[0]
