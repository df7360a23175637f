"""Preference pairs of a run: idempotent per-iteration replace, filtered keyset pages, export.

Rows mirror the `pairs.jsonl` record (TRL conversational format, docs/architecture.md §6). The prompt keeps
its message list; chosen/rejected are single assistant messages, stored as their text.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Literal

from sqlalchemy import ColumnElement, delete, func, insert, or_, select, tuple_, update
from sqlalchemy.orm import Session, sessionmaker

from backend.store.models import Iteration, Pair, execute_update, expire_cached
from backend.store.records import batches, finite_or_none, int_or_none, split_extra, storable

Agreement = Literal["agree", "disagree"]
KNOWN_KEYS = {
    "id", "prompt", "chosen", "rejected", "score_chosen", "score_rejected", "chosen_length",
    "rejected_length", "chosen_chars", "rejected_chars", "ref_chosen_logps", "ref_rejected_logps", "s_ref",
}  # fmt: skip


def _prompt_messages(prompt: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list) and prompt and all(isinstance(m, dict) and "content" in m for m in prompt):
        return prompt
    raise ValueError(f"{where}.prompt: expected a string or a non-empty list of messages")


def _response_text(response: Any, where: str) -> str:
    if isinstance(response, str):
        return response
    if isinstance(response, list) and len(response) == 1 and isinstance(response[0], dict):
        content = response[0].get("content")
        if isinstance(content, str):
            return content
    raise ValueError(f"{where}: expected a string or one assistant message")


def _prompt_text(messages: list[dict[str, Any]]) -> str:
    users = [m["content"] for m in messages if m.get("role", "user") == "user"]
    return str(users[-1] if users else messages[-1]["content"])


def pair_row(run_id: int, iteration: int, idx: int, record: dict[str, Any]) -> dict[str, Any]:
    """One `pairs.jsonl` record as a `pairs` row; ValueError names the record and field."""
    where = f"pairs[{idx}]"
    messages = _prompt_messages(record.get("prompt"), where)
    ref_c, ref_r = (
        finite_or_none(record.get("ref_chosen_logps")),
        finite_or_none(record.get("ref_rejected_logps")),
    )
    s_ref = finite_or_none(record.get("s_ref"))
    if s_ref is None and ref_c is not None and ref_r is not None:
        s_ref = ref_c - ref_r
    uid = record.get("id")
    return {
        "run_id": run_id,
        "iteration": iteration,
        "idx": idx,
        "uid": None if uid is None else str(uid),
        "prompt": messages,
        "prompt_text": _prompt_text(messages),
        "chosen_text": _response_text(record.get("chosen"), f"{where}.chosen"),
        "rejected_text": _response_text(record.get("rejected"), f"{where}.rejected"),
        "score_chosen": finite_or_none(record.get("score_chosen")),
        "score_rejected": finite_or_none(record.get("score_rejected")),
        "chosen_length": int_or_none(record.get("chosen_length")),
        "rejected_length": int_or_none(record.get("rejected_length")),
        "chosen_chars": int_or_none(record.get("chosen_chars")),
        "rejected_chars": int_or_none(record.get("rejected_chars")),
        "ref_chosen_logps": ref_c,
        "ref_rejected_logps": ref_r,
        "s_ref": s_ref,
        "extra": split_extra(record, KNOWN_KEYS),
    }


def replace_pairs(session: Session, run_id: int, iteration: int, records: Iterable[dict[str, Any]]) -> int:
    """Make the stored pairs of (run, iteration) exactly `records` (flushes; commit = atomic swap).

    Delete + insert inside the caller's transaction: a retried rank stage never duplicates, and a
    reader sees either the old or the new set.
    """
    session.execute(delete(Pair).where(Pair.run_id == run_id, Pair.iteration == iteration))
    rows = (storable(pair_row(run_id, iteration, idx, record)) for idx, record in enumerate(records))
    kept: list[dict[str, Any]] = []  # the fields the iteration's statistics need
    for batch in batches(rows):
        session.execute(insert(Pair.__table__), batch)
        kept += [{k: r[k] for k in ("s_ref", "chosen_length", "rejected_length")} for r in batch]
    execute_update(
        session,
        update(Iteration)
        .where(Iteration.run_id == run_id, Iteration.index == iteration)
        .values(pair_stats=pair_stats(kept) if kept else None),
        (Iteration, {"run_id": run_id}),
    )
    return len(kept)


# What the evaluate stage adds to each stored pair's `extra`: its policy log-probs under θ_{k+1}
# and the run objective's implicit rewards and gradient weight (aipo_core.analysis).
DIAGNOSTIC_KEYS = (
    "policy_chosen_logps", "policy_rejected_logps", "s_theta", "reward_chosen", "reward_rejected",
    "gradient_weight",
)  # fmt: skip


def attach_pair_diagnostics(
    session: Session, run_id: int, iteration: int, records: Iterable[dict[str, Any]]
) -> int:
    """Merge per-pair diagnostics (pair_diagnostics.jsonl, in pairs.jsonl order) into `extra`.

    Record i belongs to the stored pair with idx i. A count or id that does not match the stored
    pairs raises ValueError naming the record, before anything is written; a retried stage writes
    the same keys again, so the merge is idempotent.
    """
    rows = session.execute(
        select(Pair.id, Pair.idx, Pair.uid, Pair.extra)
        .where(Pair.run_id == run_id, Pair.iteration == iteration)
        .order_by(Pair.idx)
    ).all()
    records = list(records)
    if len(records) != len(rows):
        raise ValueError(
            f"pair_diagnostics: {len(records)} records for {len(rows)} stored pairs of iteration {iteration}"
        )
    updates = []
    for i, (row, record) in enumerate(zip(rows, records, strict=True)):
        uid = record.get("id")
        if row.idx != i or (uid is not None and row.uid is not None and str(uid) != row.uid):
            raise ValueError(f"pair_diagnostics[{i}]: id {uid!r} does not match stored pair {row.uid!r}")
        values = {k: finite_or_none(record[k]) for k in DIAGNOSTIC_KEYS if k in record}
        updates.append({"id": row.id, "extra": {**(row.extra or {}), **values}})
    for batch in batches(updates):
        session.execute(update(Pair), batch)  # ORM bulk UPDATE by primary key
    expire_cached(session, Pair, where={"run_id": run_id, "iteration": iteration})
    return len(updates)


def pair_filters(
    run_id: int,
    *,
    iteration: int | None = None,
    agreement: Agreement | None = None,
    min_length_diff: int | None = None,
    max_length_diff: int | None = None,
    q: str | None = None,
) -> list[ColumnElement[bool]]:
    """WHERE conditions; agreement = sign of s_ref (agree: reference prefers the judge's choice)."""
    conditions: list[ColumnElement[bool]] = [Pair.run_id == run_id]
    if iteration is not None:
        conditions.append(Pair.iteration == iteration)
    if agreement == "agree":
        conditions.append(Pair.s_ref > 0)
    elif agreement == "disagree":
        conditions.append(Pair.s_ref <= 0)
    length_diff = Pair.chosen_length - Pair.rejected_length
    if min_length_diff is not None:
        conditions.append(length_diff >= min_length_diff)
    if max_length_diff is not None:
        conditions.append(length_diff <= max_length_diff)
    if q:
        pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        conditions.append(
            or_(
                *(
                    col.ilike(pattern, escape="\\")
                    for col in (Pair.prompt_text, Pair.chosen_text, Pair.rejected_text)
                )
            )
        )
    return conditions


def query_pairs(
    session: Session,
    run_id: int,
    *,
    limit: int = 50,
    cursor: tuple[int, int] | None = None,
    include_total: bool = False,
    **filters: Any,
) -> tuple[list[Pair], tuple[int, int] | None, int | None]:
    """One keyset page in (iteration, idx) order: (pairs, next cursor or None, total if asked)."""
    conditions = pair_filters(run_id, **filters)
    query = select(Pair).where(*conditions)
    if cursor is not None:
        query = query.where(tuple_(Pair.iteration, Pair.idx) > tuple_(*cursor))
    rows = list(session.scalars(query.order_by(Pair.iteration, Pair.idx).limit(limit + 1)).all())
    next_cursor = (rows[limit - 1].iteration, rows[limit - 1].idx) if len(rows) > limit else None
    total = None
    if include_total:
        total = session.scalar(select(func.count()).select_from(Pair).where(*conditions)) or 0
    return rows[:limit], next_cursor, total


def pair_record(pair: Pair) -> dict[str, Any]:
    """A stored pair back in the `pairs.jsonl` / TRL conversational format (plus its iteration)."""
    return {
        "id": pair.uid,
        "iteration": pair.iteration,
        "prompt": pair.prompt,
        "chosen": [{"role": "assistant", "content": pair.chosen_text}],
        "rejected": [{"role": "assistant", "content": pair.rejected_text}],
        "score_chosen": pair.score_chosen,
        "score_rejected": pair.score_rejected,
        "chosen_length": pair.chosen_length,
        "rejected_length": pair.rejected_length,
        "chosen_chars": pair.chosen_chars,
        "rejected_chars": pair.rejected_chars,
        "ref_chosen_logps": pair.ref_chosen_logps,
        "ref_rejected_logps": pair.ref_rejected_logps,
        "s_ref": pair.s_ref,
        **(pair.extra or {}),
    }


def iter_pair_records(
    make_session: sessionmaker[Session], run_id: int, *, batch_size: int = 1_000, **filters: Any
) -> Iterator[list[dict[str, Any]]]:
    """Batches of export records, each read in its own short transaction.

    A streamed download can take a while; holding one transaction open for it would block the
    worker's writes on SQLite, so every batch re-opens a session and continues from the cursor.
    """
    cursor: tuple[int, int] | None = None
    while True:
        with make_session() as session:
            pairs, cursor, _ = query_pairs(session, run_id, limit=batch_size, cursor=cursor, **filters)
            records = [pair_record(p) for p in pairs]
        if records:
            yield records
        if cursor is None:
            return


def pair_stats(rows: list[dict[str, Any]]) -> dict[str, float | int | None]:
    """Pair count, agreement rate P(s_ref > 0), mean s_ref and mean lengths of pair rows."""
    s_refs = [r["s_ref"] for r in rows if r["s_ref"] is not None]
    return {
        "pairs": len(rows),
        "agreement_rate": _mean([1.0 if s > 0 else 0.0 for s in s_refs]),
        "mean_s_ref": _mean(s_refs),
        "mean_chosen_length": _mean([r["chosen_length"] for r in rows if r["chosen_length"] is not None]),
        "mean_rejected_length": _mean(
            [r["rejected_length"] for r in rows if r["rejected_length"] is not None]
        ),
    }


def _mean(values: list[float]) -> float | None:
    return float(sum(values) / len(values)) if values else None


def pair_stats_by_iteration(session: Session, run_id: int) -> dict[int, dict[str, float | int | None]]:
    """Per iteration: the statistics stored by `replace_pairs` (iterations without pairs are absent)."""
    rows = session.execute(
        select(Iteration.index, Iteration.pair_stats).where(
            Iteration.run_id == run_id, Iteration.pair_stats.is_not(None)
        )
    ).all()
    return {index: stats for index, stats in rows}
