"""/runs/{id}/metrics: idempotent bulk ingest and downsampled history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from backend.api.common import ERRORS, RunId, load_run
from backend.deps import SessionDep, require_token
from backend.schemas import (
    MAX_INT32,
    MetricHistory,
    MetricHistoryPoint,
    MetricIngest,
    MetricIngestResult,
    MetricKeyList,
    MetricKeyPublic,
    MetricSeries,
    SafeStr,
)
from backend.store import metrics as store

router = APIRouter(prefix="/runs", tags=["metrics"], dependencies=[Depends(require_token)], responses=ERRORS)
MAX_KEYS_PER_REQUEST = 100


@router.post("/{run_id}/metrics", response_model=MetricIngestResult, summary="Ingest metric points")
def ingest_metrics(run_id: RunId, body: MetricIngest, session: SessionDep) -> MetricIngestResult:
    """Store up to 100,000 points per request. A point whose (iteration, stage, key, step) is already
    stored is skipped, so retrying a batch never duplicates (the first value wins). The pipeline's
    stage names (self_instruct, generate, rank, train, evaluate) are refused with 422: only the
    workers write those."""
    load_run(session, run_id)
    inserted = store.ingest_metrics(session, run_id, (p.model_dump() for p in body.points))
    session.commit()
    return MetricIngestResult(received=len(body.points), inserted=inserted)


@router.get("/{run_id}/metrics", response_model=MetricHistory, summary="Metric history (downsampled)")
def metric_history(
    run_id: RunId,
    session: SessionDep,
    key: Annotated[
        list[SafeStr] | None,
        Query(max_length=MAX_KEYS_PER_REQUEST, description="Repeat for several; none = all."),
    ] = None,
    points: Annotated[int, Query(ge=2, le=10_000, description="At most this many points per series.")] = 500,
    iteration: Annotated[int | None, Query(ge=0, le=MAX_INT32)] = None,
    stage: Annotated[SafeStr | None, Query(max_length=32)] = None,
    attempt: Annotated[
        int | None,
        Query(ge=0, le=MAX_INT32, description="Only this stage attempt's points; none = the latest."),
    ] = None,
) -> MetricHistory:
    """Each series in (iteration, step) order; longer series are averaged into about `points`
    equal-width step buckets in SQL, split at iteration boundaries (each point reports the bucket's
    mean, min, max and count at its first step). A retried stage's points are kept per attempt;
    each (iteration, stage) shows its latest attempt's unless `attempt` asks for another."""
    load_run(session, run_id)
    if key:
        keys = list(dict.fromkeys(key))
    else:
        keys = [k for k, _ in store.metric_keys(session, run_id)][:MAX_KEYS_PER_REQUEST]
    # All keys in one pass over the index (the per-(key, iteration) counts are one scan).
    found = store.metric_histories(
        session, run_id, keys, points=points, iteration=iteration, stage=stage, attempt=attempt
    )
    series = []
    for name in keys:
        total, rows = found.get(name, (0, []))
        series.append(MetricSeries(key=name, total=total, points=[MetricHistoryPoint(**r) for r in rows]))
    return MetricHistory(series=series)


@router.get("/{run_id}/metrics/keys", response_model=MetricKeyList, summary="Metric keys of a run")
def metric_keys(run_id: RunId, session: SessionDep) -> MetricKeyList:
    """Every key logged for the run with its number of points."""
    load_run(session, run_id)
    return MetricKeyList(
        items=[MetricKeyPublic(key=k, count=n) for k, n in store.metric_keys(session, run_id)]
    )
