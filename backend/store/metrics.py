"""Metric points: idempotent bulk ingest and downsampled history.

The unique key (run, key, iteration, step, stage, attempt) makes ingest idempotent: a retried
batch hits ON CONFLICT DO NOTHING, so every point is stored exactly once. `attempt` is the stage
attempt that logged a worker's point (0 for points sent to the API, whose pipeline stage names
are reserved for workers): a retried stage logs a new curve beside the old one instead of
into it, and history shows each (key, iteration, stage)'s latest attempt unless asked for
another. History is downsampled in SQL (bucket means over step ranges, per iteration) so a
million-point series never leaves the database in full.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from typing import Any

from sqlalchemy import and_, func, or_, select, text, tuple_
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from backend.store.models import Metric, utcnow

# Rows per INSERT statement group; SQLAlchemy splits further into multi-VALUES pages.
INGEST_CHUNK = 10_000
CONFLICT_KEY = ["run_id", "key", "iteration", "step", "stage", "attempt"]
# History queries are a UNION ALL of branches, each over one key and up to this many iterations
# (a CASE picks the iteration's bucket parameters per row, so more arms cost more per row) …
ITERATIONS_PER_BRANCH = 16
# … and at most this many branches per statement (SQLite allows 500).
BRANCHES_PER_QUERY = 200
MAX_INT64 = 2**63 - 1


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _utc(value: datetime | None) -> datetime | None:
    """Naive times are taken as UTC (the raw PostgreSQL path bypasses the column type)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _chunks(rows: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    iterator = iter(rows)
    while chunk := list(islice(iterator, size)):
        yield chunk


# PostgreSQL: one INSERT … SELECT FROM unnest(arrays) per chunk is several times faster than a
# multi-row VALUES list, and its rowcount is exactly the number of new rows.
_PG_INGEST = text(
    "INSERT INTO metrics (run_id, iteration, stage, attempt, key, step, value, time) "
    "SELECT :run_id, * FROM unnest(CAST(:iteration AS integer[]), CAST(:stage AS varchar[]), "
    "CAST(:attempt AS integer[]), CAST(:key AS varchar[]), CAST(:step AS bigint[]), "
    "CAST(:value AS double precision[]), CAST(:time AS timestamptz[])) "
    f"ON CONFLICT ({', '.join(CONFLICT_KEY)}) DO NOTHING"
)
_SQLITE_INGEST = (
    sqlite.insert(Metric.__table__)
    .on_conflict_do_nothing(index_elements=CONFLICT_KEY)
    .returning(Metric.__table__.c.id)
)


def _insert_chunk(session: Session, run_id: int, chunk: list[dict[str, Any]]) -> int:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        columns = {
            name: [row[name] for row in chunk]
            for name in ("iteration", "stage", "attempt", "key", "step", "value", "time")
        }
        return int(session.execute(_PG_INGEST, {"run_id": run_id, **columns}).rowcount)
    if dialect == "sqlite":
        rows = [{"run_id": run_id, **row} for row in chunk]
        return len(session.execute(_SQLITE_INGEST, rows).all())
    raise NotImplementedError(f"metric ingest supports PostgreSQL and SQLite, not {dialect}")


def ingest_metrics(session: Session, run_id: int, points: Iterable[dict[str, Any]]) -> int:
    """Insert points, skipping those already stored; returns how many were new (flushes only).

    point: {"key": str, "step": int, "value": float | None, "iteration": int = 0, "stage": str = "",
    "attempt": int = 0, "time": datetime | None}. Non-finite values are stored as NULL. Rows are
    inserted in key order so concurrent overlapping batches take their row locks in the same
    order (no deadlocks).
    """
    now: datetime = utcnow()
    rows = sorted(
        (
            {
                "iteration": int(p.get("iteration") or 0),
                "stage": p.get("stage") or "",
                "attempt": int(p.get("attempt") or 0),
                "key": p["key"],
                "step": int(p["step"]),
                "value": _finite(p.get("value")),
                "time": _utc(p.get("time")) or now,
            }
            for p in points
        ),
        key=lambda r: (r["key"], r["iteration"], r["step"], r["stage"], r["attempt"]),
    )
    return sum(_insert_chunk(session, run_id, chunk) for chunk in _chunks(rows, INGEST_CHUNK))


def metric_histories(
    session: Session,
    run_id: int,
    keys: Sequence[str] | None = None,
    *,
    points: int = 500,
    iteration: int | None = None,
    stage: str | None = None,
    attempt: int | None = None,
) -> dict[str, tuple[int, list[dict[str, Any]]]]:
    """{key: (points selected, history)} for `keys` (None = every key of the run).

    Of each (key, iteration, stage), only the latest attempt's points are selected, or only
    `attempt`'s when given. A selection of at most `points` rows comes back as is, in (iteration,
    step, stage) order. A longer one is bucketed by step range within each iteration, so buckets
    never straddle an iteration (each iteration's curve starts at its own first step). Iteration
    i gets its share of `points` by row count (largest remainders, at least one bucket), cut into
    equal step ranges; rows with the same step (e.g. from two stages) share a bucket. A history
    therefore has at most `points + iterations - 1` entries, each the bucket's mean with
    min/max/count at the bucket's first step.

    Why step ranges rather than equal-count buckets: numbering the rows needs a window function
    over the whole key, 4-5× slower on SQLite than the two passes here: a per-(key, iteration)
    count/min/max (index-only, see `_parts`), then per key one GROUP BY over its range of the
    unique index on an integer bucket id computed from the iteration and step alone.
    """
    scope = [Metric.run_id == run_id]
    if iteration is not None:
        scope.append(Metric.iteration == iteration)
    if stage is not None:
        scope.append(Metric.stage == stage)
    if attempt is not None:
        scope.append(Metric.attempt == attempt)
    parts = _parts(session, scope, keys)
    latest = _latest_attempts(parts)
    shown = set(latest)
    chosen = _Selection(latest, superseded={part.key for part in parts if part not in shown})
    spans = _spans(latest)
    totals: dict[str, int] = {}
    for span in spans:
        totals[span.key] = totals.get(span.key, 0) + span.count
    result: dict[str, tuple[int, list[dict[str, Any]]]] = {key: (n, []) for key, n in totals.items()}
    short = [key for key, n in totals.items() if n <= points]
    if short:
        for key, entry in _raw_entries(session, scope, short, chosen):
            result[key][1].append(entry)
    branches = _branches(_bucket_plan([span for span in spans if totals[span.key] > points], points))
    for start in range(0, len(branches), BRANCHES_PER_QUERY):
        chunk = branches[start : start + BRANCHES_PER_QUERY]
        for key, entry in _bucketed_entries(session, run_id, stage, attempt, chunk, chosen):
            result[key][1].append(entry)
    return result


@dataclass(frozen=True)
class _Part:
    """Rows of one (key, iteration, stage, attempt): how many, first and last step. `stage` None:
    every stage of the (key, iteration), whose rows all carry the one `attempt`."""

    key: str
    iteration: int
    stage: str | None
    attempt: int
    count: int
    first_step: int
    last_step: int


@dataclass(frozen=True)
class _Selection:
    """The parts a history shows; keys in `superseded` also have rows of older attempts to skip."""

    parts: list[_Part]
    superseded: set[str]

    def allowed(
        self, key: str, iterations: Iterable[int] | None = None
    ) -> tuple[list[int], list[tuple[int, str, int]]]:
        """`key`'s selected rows (in `iterations`): whole iterations, exact (iteration, stage, attempt)s."""
        wanted = None if iterations is None else set(iterations)
        whole: list[int] = []
        exact: list[tuple[int, str, int]] = []
        for p in self.parts:
            if p.key != key or (wanted is not None and p.iteration not in wanted):
                continue
            if p.stage is None:
                whole.append(p.iteration)
            else:
                exact.append((p.iteration, p.stage, p.attempt))
        return whole, exact


def _parts(session: Session, scope: list[Any], keys: Sequence[str] | None) -> list[_Part]:
    """Count and step range of each (key, iteration), from one pass over the unique index as
    before attempts existed; only a (key, iteration) whose rows carry more than one attempt (a
    retried stage, or stages at different attempts) is counted again per (stage, attempt)."""
    conditions = list(scope) if keys is None else [*scope, Metric.key.in_(list(keys))]
    rows = session.execute(
        select(
            Metric.key,
            Metric.iteration,
            func.count(),
            func.min(Metric.step),
            func.max(Metric.step),
            func.min(Metric.attempt),
            func.max(Metric.attempt),
        )
        .where(*conditions)
        .group_by(Metric.key, Metric.iteration)
    ).all()
    parts: list[_Part] = []
    mixed: list[tuple[str, int]] = []
    for key, iteration, count, first, last, lowest, highest in rows:
        if lowest == highest:
            parts.append(_Part(key, iteration, None, lowest, count, first, last))
        else:
            mixed.append((key, iteration))
    if mixed:
        group = (Metric.key, Metric.iteration, Metric.stage, Metric.attempt)
        detail = session.execute(
            select(*group, func.count(), func.min(Metric.step), func.max(Metric.step))
            .where(*scope, tuple_(Metric.key, Metric.iteration).in_(mixed))
            .group_by(*group)
        ).all()
        parts.extend(_Part(*row) for row in detail)
    return parts


def _latest_attempts(parts: Sequence[_Part]) -> list[_Part]:
    """Of each (key, iteration, stage), the part of its highest attempt."""
    latest: dict[tuple[str, int, str | None], _Part] = {}
    for part in parts:
        seen = latest.get((part.key, part.iteration, part.stage))
        if seen is None or part.attempt > seen.attempt:
            latest[(part.key, part.iteration, part.stage)] = part
    return list(latest.values())


def _spans(parts: Sequence[_Part]) -> list[_Span]:
    """The selected parts merged per (key, iteration), in that order."""
    merged: dict[tuple[str, int], _Span] = {}
    for part in parts:
        seen = merged.get((part.key, part.iteration))
        merged[(part.key, part.iteration)] = (
            _Span(part.key, part.iteration, part.count, part.first_step, part.last_step)
            if seen is None
            else _Span(
                part.key,
                part.iteration,
                seen.count + part.count,
                min(seen.first_step, part.first_step),
                max(seen.last_step, part.last_step),
            )
        )
    return [merged[k] for k in sorted(merged)]


@dataclass(frozen=True)
class _Span:
    """One (key, iteration) of the selected rows: how many, and their first and last step."""

    key: str
    iteration: int
    count: int
    first_step: int
    last_step: int


@dataclass(frozen=True)
class _Buckets:
    """How one (key, iteration) maps a step s to its bucket id: base + (s - first_step) * mul // div.

    Ids of different (key, iteration)s never overlap (each has [base, base + buckets)), so rows of
    several (key, iteration)s sort into history order by id, and the id tells whose they are.
    """

    key: str
    iteration: int
    base: int
    first_step: int
    mul: int
    div: int


def _apportion(counts: Sequence[int], points: int) -> list[int]:
    """Buckets per iteration: the largest-remainder split of `points` by row count, at least 1 each.

    Exact integer arithmetic; ties in the remainder go to the earlier iteration. The shares sum to
    `points` except where the floor of one is raised to 1, hence `points + iterations - 1` at most.
    """
    total = sum(counts)
    quotas = [points * count for count in counts]  # shares times `total`
    shares = [quota // total for quota in quotas]
    by_remainder = sorted(range(len(counts)), key=lambda i: -(quotas[i] % total))
    for i in by_remainder[: points - sum(shares)]:
        shares[i] += 1
    return [max(1, share) for share in shares]


def _bucket_plan(spans: Sequence[_Span], points: int) -> list[_Buckets]:
    """Bucket parameters of every (key, iteration) of the series longer than `points`."""
    by_key: dict[str, list[_Span]] = {}
    for span in spans:
        by_key.setdefault(span.key, []).append(span)
    plan: list[_Buckets] = []
    base = 0
    for key_spans in by_key.values():
        for span, buckets in zip(key_spans, _apportion([s.count for s in key_spans], points), strict=True):
            mul, div = _step_scale(span.last_step - span.first_step + 1, buckets)
            plan.append(_Buckets(span.key, span.iteration, base, span.first_step, mul, div))
            base += buckets
    return plan


def _step_scale(width: int, buckets: int) -> tuple[int, int]:
    """(mul, div) so that offset * mul // div, for offsets 0 … width-1, covers 0 … buckets-1.

    Normally (buckets, width): equal step ranges, and exactly one bucket per step when steps are
    dense and no more than the buckets. When offset * buckets could overflow a 64-bit integer
    (steps near 2**63), (1, ⌈width/buckets⌉) instead: ranges of that many steps, never more than
    `buckets` of them.
    """
    if buckets == 1:
        return 0, 1
    if (width - 1) * buckets <= MAX_INT64:
        return buckets, width
    return 1, -(-width // buckets)


def _raw_entries(
    session: Session, scope: list[Any], keys: Sequence[str], chosen: _Selection
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every selected row of `keys` as its own entry (count 1), in (key, iteration, step, stage) order."""
    conditions = [*scope, Metric.key.in_(list(keys))]
    superseded = [key for key in keys if key in chosen.superseded]
    if superseded:
        latest_only = []
        for key in superseded:
            whole, exact = chosen.allowed(key)
            options = [Metric.iteration.in_(whole)] if whole else []
            if exact:
                options.append(tuple_(Metric.iteration, Metric.stage, Metric.attempt).in_(exact))
            latest_only.append(and_(Metric.key == key, or_(*options)))
        conditions.append(or_(Metric.key.not_in(superseded), *latest_only))
    rows = session.execute(
        select(Metric.key, Metric.iteration, Metric.stage, Metric.attempt, Metric.step, Metric.value)
        .where(*conditions)
        .order_by(Metric.key, Metric.iteration, Metric.step, Metric.stage)
    )
    for key, it, st, att, step, value in rows:
        yield key, _entry(it, st, att, step, value, value, value, 1)


def _branches(plan: Sequence[_Buckets]) -> list[list[_Buckets]]:
    """The plan cut into UNION ALL branches: one key and up to ITERATIONS_PER_BRANCH iterations each."""
    branches: list[list[_Buckets]] = []
    for buckets in plan:
        last = branches[-1] if branches else None
        if last and last[0].key == buckets.key and len(last) < ITERATIONS_PER_BRANCH:
            last.append(buckets)
        else:
            branches.append([buckets])
    return branches


def _bucketed_entries(
    session: Session,
    run_id: int,
    stage: str | None,
    attempt: int | None,
    branches: Sequence[list[_Buckets]],
    chosen: _Selection,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Bucket aggregates of the (key, iteration)s in `branches`, in (key, iteration, step) order.

    Each branch is one GROUP BY over one key's range of the unique index (run_id, key, iteration,
    …); the bucket parameters are inlined as integer constants, picked per row by iteration with
    a CASE when the branch covers several (one scan per key instead of one per iteration: ~30%
    faster on PostgreSQL at 15 iterations). Why plain SQL text: building these as SQLAlchemy
    expressions cost ~1 ms per branch in Python, more than the database took; and a VALUES table
    joined on (key, iteration) instead makes SQLite read the parameters once per row (~30% slower).
    A key with points of older attempts also gets a row-value IN over its selected (iteration,
    stage, attempt)s; keys never retried (nearly all) are read exactly as before.
    """
    filters = "" if stage is None else " AND stage = :stage"
    if attempt is not None:
        filters += " AND attempt = :attempt"
    params: dict[str, Any] = {"run_id": run_id}
    selects = []
    for i, branch in enumerate(branches):
        if len(branch) == 1:
            bucket = _bucket_sql(branch[0])
        else:
            arms = " ".join(f"WHEN {b.iteration:d} THEN {_bucket_sql(b)}" for b in branch)
            bucket = f"CASE iteration {arms} END"
        iterations = ", ".join(f"{b.iteration:d}" for b in branch)
        key = branch[0].key
        params[f"key_{i}"] = key
        latest_only = ""
        if key in chosen.superseded:
            whole, exact = chosen.allowed(key, (b.iteration for b in branch))
            options = [f"iteration IN ({', '.join(f'{it:d}' for it in whole)})"] if whole else []
            if exact:
                for j, (_, part_stage, _) in enumerate(exact):
                    params[f"stage_{i}_{j}"] = part_stage
                listed = ", ".join(
                    f"({it:d}, :stage_{i}_{j}, {att:d})" for j, (it, _, att) in enumerate(exact)
                )
                options.append(f"(iteration, stage, attempt) IN ({listed})")
            latest_only = f" AND ({' OR '.join(options)})"
        selects.append(
            f"SELECT {bucket} AS bucket, min(stage), max(attempt), min(step), avg(value), min(value), "
            f"max(value), count(*) FROM metrics WHERE run_id = :run_id AND key = :key_{i} "
            f"AND iteration IN ({iterations}){filters}{latest_only} GROUP BY 1"
        )
    if stage is not None:
        params["stage"] = stage
    if attempt is not None:
        params["attempt"] = attempt
    rows = sorted(session.execute(text(" UNION ALL ".join(selects)), params).all(), key=lambda row: row[0])
    plan = [buckets for branch in branches for buckets in branch]
    bases = [buckets.base for buckets in plan]
    for bucket_id, st, att, step, mean, lo, hi, count in rows:
        owner = plan[bisect_right(bases, bucket_id) - 1]
        yield owner.key, _entry(owner.iteration, st, att, step, _float(mean), lo, hi, count)


def _bucket_sql(buckets: _Buckets) -> str:
    return f"{buckets.base:d} + (step - {buckets.first_step:d}) * {buckets.mul:d} / {buckets.div:d}"


def _entry(
    iteration: int,
    stage: str,
    attempt: int,
    step: int,
    value: float | None,
    lo: float | None,
    hi: float | None,
    count: int,
) -> dict[str, Any]:
    return {
        "iteration": iteration,
        "stage": stage,
        "attempt": attempt,
        "step": step,
        "value": value,
        "min": lo,
        "max": hi,
        "count": count,
    }


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def metric_history(
    session: Session,
    run_id: int,
    key: str,
    *,
    points: int = 500,
    iteration: int | None = None,
    stage: str | None = None,
    attempt: int | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    """(points selected, downsampled history) of one key; see `metric_histories`."""
    found = metric_histories(
        session, run_id, [key], points=points, iteration=iteration, stage=stage, attempt=attempt
    )
    return found.get(key, (0, []))


def metric_keys(session: Session, run_id: int) -> list[tuple[str, int]]:
    """Every key logged for a run with its number of points."""
    rows = session.execute(
        select(Metric.key, func.count())
        .where(Metric.run_id == run_id)
        .group_by(Metric.key)
        .order_by(Metric.key)
    ).all()
    return [(key, count) for key, count in rows]


def eval_metrics_by_iteration(session: Session, run_id: int) -> dict[int, dict[str, float | None]]:
    """{iteration: {key: value}} of the evaluate stage's metrics (latest attempt, latest step)."""
    rows = session.execute(
        select(Metric.iteration, Metric.key, Metric.value)
        .where(Metric.run_id == run_id, Metric.stage == "evaluate")
        .order_by(Metric.iteration, Metric.key, Metric.attempt, Metric.step)
    ).all()
    result: dict[int, dict[str, float | None]] = {}
    for iteration, key, value in rows:
        result.setdefault(iteration, {})[key] = value
    return result
