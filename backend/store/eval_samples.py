"""Evaluation samples (model output vs baseline output with the judge's preference).

Rows mirror `eval/{benchmark}.jsonl` records (TEAM.md); preference follows AlpacaEval:
2 = model output preferred, 1 = baseline preferred, 1.5 = tie.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, func, insert, select, tuple_
from sqlalchemy.orm import Session

from backend.store.models import EvalSample
from backend.store.records import batches, finite_or_none, int_or_none, split_extra

KNOWN_KEYS = {
    "id", "instruction", "output", "baseline_output", "preference", "output_chars", "baseline_chars",
    "output_tokens",
}  # fmt: skip


def eval_sample_row(
    run_id: int, iteration: int, benchmark: str, idx: int, record: dict[str, Any]
) -> dict[str, Any]:
    """One eval record as an `eval_samples` row; ValueError names the record and field."""
    for field in ("instruction", "output"):
        if not isinstance(record.get(field), str):
            raise ValueError(f"{benchmark}[{idx}].{field}: expected a string")
    uid = record.get("id")
    baseline = record.get("baseline_output")
    return {
        "run_id": run_id,
        "iteration": iteration,
        "benchmark": benchmark,
        "idx": idx,
        "uid": None if uid is None else str(uid),
        "instruction": record["instruction"],
        "output": record["output"],
        "baseline_output": None if baseline is None else str(baseline),
        "preference": finite_or_none(record.get("preference")),
        "output_chars": int_or_none(record.get("output_chars")),
        "baseline_chars": int_or_none(record.get("baseline_chars")),
        "output_tokens": int_or_none(record.get("output_tokens")),
        "extra": split_extra(record, KNOWN_KEYS),
    }


def replace_eval_samples(
    session: Session, run_id: int, iteration: int, benchmark: str, records: Iterable[dict[str, Any]]
) -> int:
    """Make the stored samples of (run, iteration, benchmark) exactly `records` (flushes only)."""
    session.execute(
        delete(EvalSample).where(
            EvalSample.run_id == run_id, EvalSample.iteration == iteration, EvalSample.benchmark == benchmark
        )
    )
    rows = (eval_sample_row(run_id, iteration, benchmark, i, r) for i, r in enumerate(records))
    count = 0
    for batch in batches(rows):
        session.execute(insert(EvalSample.__table__), batch)
        count += len(batch)
    return count


EvalCursor = tuple[int, str, int]


def query_eval_samples(
    session: Session,
    run_id: int,
    *,
    iteration: int | None = None,
    benchmark: str | None = None,
    limit: int = 50,
    cursor: EvalCursor | None = None,
) -> tuple[list[EvalSample], EvalCursor | None, int]:
    """One keyset page in (iteration, benchmark, idx) order: (samples, next cursor, total)."""
    conditions = [EvalSample.run_id == run_id]
    if iteration is not None:
        conditions.append(EvalSample.iteration == iteration)
    if benchmark is not None:
        conditions.append(EvalSample.benchmark == benchmark)
    query = select(EvalSample).where(*conditions)
    if cursor is not None:
        query = query.where(
            tuple_(EvalSample.iteration, EvalSample.benchmark, EvalSample.idx) > tuple_(*cursor)
        )
    order = (EvalSample.iteration, EvalSample.benchmark, EvalSample.idx)
    rows = list(session.scalars(query.order_by(*order).limit(limit + 1)).all())
    last = rows[limit - 1] if len(rows) > limit else None
    next_cursor = (last.iteration, last.benchmark, last.idx) if last is not None else None
    total = session.scalar(select(func.count()).select_from(EvalSample).where(*conditions)) or 0
    return rows[:limit], next_cursor, total
