"""Evaluation samples (model output vs baseline output with the judge's preference).

Rows mirror `eval/{benchmark}.jsonl` records (and `eval/base/{benchmark}.jsonl`, θ_0's answers,
stored with evaluated = "base"); preference follows AlpacaEval: 2 = model output preferred,
1 = baseline preferred, 1.5 = tie.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, tuple_
from sqlalchemy.orm import Session

from aipo_core.config import MAX_ITERATIONS
from aipo_core.eval_summary import Evaluation
from backend.store.models import EvalSample
from backend.store.records import batches, finite_or_none, int_or_none, split_extra, storable

KNOWN_KEYS = {
    "id", "instruction", "output", "baseline_output", "preference", "output_chars", "baseline_chars",
    "output_tokens",
}  # fmt: skip


def eval_sample_row(
    run_id: int, iteration: int, benchmark: str, idx: int, record: dict[str, Any], evaluated: str = "policy"
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
        "evaluated": evaluated,
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
    session: Session,
    run_id: int,
    iteration: int,
    benchmark: str,
    records: Iterable[dict[str, Any]],
    *,
    evaluated: str = "policy",
) -> int:
    """Make the stored samples of (run, iteration, benchmark, evaluated) exactly `records` (flushes only)."""
    session.execute(
        delete(EvalSample).where(
            EvalSample.run_id == run_id,
            EvalSample.iteration == iteration,
            EvalSample.benchmark == benchmark,
            EvalSample.evaluated == evaluated,
        )
    )
    rows = (
        storable(eval_sample_row(run_id, iteration, benchmark, idx, record, evaluated))
        for idx, record in enumerate(records)
    )
    count = 0
    for batch in batches(rows):
        session.execute(insert(EvalSample.__table__), batch)
        count += len(batch)
    return count


EvalCursor = tuple[int, str, str, int]
EVALUATION_ORDER = (EvalSample.iteration, EvalSample.benchmark, EvalSample.evaluated, EvalSample.idx)


def query_eval_samples(
    session: Session,
    run_id: int,
    *,
    iteration: int | None = None,
    benchmark: str | None = None,
    evaluated: str | None = None,
    limit: int = 50,
    cursor: EvalCursor | None = None,
) -> tuple[list[EvalSample], EvalCursor | None, int]:
    """One keyset page in (iteration, benchmark, evaluated, idx) order: θ_0's answers ("base")
    come before iteration 0's policy answers. Returns (samples, next cursor, total)."""
    conditions = [EvalSample.run_id == run_id]
    if iteration is not None:
        conditions.append(EvalSample.iteration == iteration)
    if benchmark is not None:
        conditions.append(EvalSample.benchmark == benchmark)
    if evaluated is not None:
        conditions.append(EvalSample.evaluated == evaluated)
    order = (EvalSample.iteration, EvalSample.benchmark, EvalSample.evaluated, EvalSample.idx)
    query = select(EvalSample).where(*conditions)
    if cursor is not None:
        query = query.where(tuple_(*order) > tuple_(*cursor))
    rows = list(session.scalars(query.order_by(*order).limit(limit + 1)).all())
    last = rows[limit - 1] if len(rows) > limit else None
    next_cursor = (last.iteration, last.benchmark, last.evaluated, last.idx) if last is not None else None
    total = session.scalar(select(func.count()).select_from(EvalSample).where(*conditions)) or 0
    return rows[:limit], next_cursor, total


def run_evaluations(session: Session, run_id: int) -> list[Evaluation]:
    """Every stored evaluation of a run, as columns of the fields the win-rate summary reads."""
    return runs_evaluations(session, [run_id]).get(run_id, [])


def runs_evaluations(session: Session, run_ids: Sequence[int]) -> dict[int, list[Evaluation]]:
    """Every stored evaluation of each run in `run_ids`, in one query (runs without any: absent).

    Rows go straight into per-evaluation columns (no object per judgement), so a 12,880-row
    read leaves little behind for the garbage collector.
    """
    if not run_ids:
        return {}
    query = (
        select(
            EvalSample.run_id,
            EvalSample.evaluated,
            EvalSample.iteration,
            EvalSample.benchmark,
            EvalSample.uid,
            EvalSample.preference,
            EvalSample.output_chars,
            EvalSample.baseline_chars,
            EvalSample.output_tokens,
        )
        .where(EvalSample.run_id.in_(run_ids))
        .order_by(EvalSample.run_id, *EVALUATION_ORDER)
    )
    columns: dict[tuple[int, str, int, str], tuple[list, list, list, list, list]] = {}
    for run_id, evaluated, iteration, benchmark, *values in session.execute(query).tuples():
        group = columns.get((run_id, evaluated, iteration, benchmark))
        if group is None:
            group = columns[(run_id, evaluated, iteration, benchmark)] = ([], [], [], [], [])
        for column, value in zip(group, values, strict=True):
            column.append(value)
    evaluations: dict[int, list[Evaluation]] = {}
    for (run_id, evaluated, iteration, benchmark), (uids, *rest) in columns.items():
        evaluation = Evaluation(benchmark, evaluated, iteration, [str(u) for u in uids], *rest)
        evaluations.setdefault(run_id, []).append(evaluation)
    return evaluations


def evaluation_fingerprints(session: Session, run_ids: Sequence[int]) -> dict[int, tuple[Any, ...]]:
    """Per run with stored judgements, aggregates that change whenever its judgements do, in one
    grouped query: a list page can tell which runs' cached summaries still hold without reading
    every judgement. Replacing an evaluation deletes and re-inserts its rows (`replace_eval_samples`),
    which moves the id range and count, or (SQLite reuses the highest ids) the sums of the judged
    values and of each preference times its lengths."""
    if not run_ids:
        return {}
    query = (
        select(
            EvalSample.run_id,
            func.count(),
            func.min(EvalSample.id),
            func.max(EvalSample.id),
            func.sum(EvalSample.preference),
            func.sum(EvalSample.output_chars),
            func.sum(EvalSample.baseline_chars),
            func.sum(EvalSample.output_tokens),
            # Which preference went with which lengths: the length-controlled rate depends on it.
            func.sum(EvalSample.preference * EvalSample.output_chars),
            func.sum(EvalSample.preference * EvalSample.baseline_chars),
        )
        .where(EvalSample.run_id.in_(run_ids))
        .group_by(EvalSample.run_id)
    )
    return {run_id: tuple(values) for run_id, *values in session.execute(query).tuples()}


def prompt_outputs(
    session: Session, run_ids: Sequence[int], benchmark: str, prompt_id: str
) -> list[EvalSample]:
    """Every stored answer to one benchmark prompt in the given runs: per run θ_0's ("base")
    first, then the policies in iteration order. At most one row per evaluation is possible
    (a prompt appears once in a benchmark sample), so the result is bounded by the run count
    times MAX_ITERATIONS + 1."""
    query = (
        select(EvalSample)
        .where(
            EvalSample.run_id.in_(list(run_ids)),
            EvalSample.benchmark == benchmark,
            EvalSample.uid == prompt_id,
        )
        .order_by(EvalSample.run_id, EvalSample.evaluated, EvalSample.iteration, EvalSample.idx)
        .limit(len(run_ids) * (MAX_ITERATIONS + 1))
    )
    return list(session.scalars(query).all())


@dataclass(frozen=True)
class LatestEvaluation:
    """A run's most recent evaluation on a benchmark: which model, and its judgement per prompt."""

    evaluated: str
    iteration: int
    preferences: dict[str, float | None]

    @property
    def policy_index(self) -> int:
        return 0 if self.evaluated == "base" else self.iteration + 1


def latest_evaluation(session: Session, run_id: int, benchmark: str) -> LatestEvaluation | None:
    """The latest policy evaluated on `benchmark` (θ_0 when no policy is yet), or None."""
    of_run = (EvalSample.run_id == run_id, EvalSample.benchmark == benchmark)
    iteration = session.scalar(
        select(func.max(EvalSample.iteration)).where(*of_run, EvalSample.evaluated == "policy")
    )
    evaluated = "policy" if iteration is not None else "base"
    iteration = 0 if iteration is None else iteration
    rows = session.execute(
        select(EvalSample.uid, EvalSample.idx, EvalSample.preference).where(
            *of_run, EvalSample.evaluated == evaluated, EvalSample.iteration == iteration
        )
    ).all()
    if not rows:
        return None
    return LatestEvaluation(
        evaluated, iteration, {(uid if uid is not None else f"#{idx}"): pref for uid, idx, pref in rows}
    )
