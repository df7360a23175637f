"""/runs/{id}/pairs (filtered keyset pages, streamed export) and /runs/{id}/eval-samples."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from backend.api.common import ERRORS, RunId, bad_cursor, load_run
from backend.db import get_sessionmaker
from backend.deps import SessionDep, SettingsDep, require_token
from backend.export import jsonl_chunks, parquet_chunks
from backend.schemas import MAX_INT32, EvalSamplePage, EvalSamplePublic, PairPage, PairPublic, SafeStr
from backend.store.eval_samples import EvalCursor, query_eval_samples
from backend.store.models import EVALUATED, Pair
from backend.store.pairs import Agreement, iter_pair_records, query_pairs

router = APIRouter(prefix="/runs", tags=["pairs"], dependencies=[Depends(require_token)], responses=ERRORS)

IterationQ = Annotated[int | None, Query(ge=0, le=MAX_INT32)]
AgreementQ = Annotated[
    Agreement | None,
    Query(description="agree: s_ref > 0 (reference agrees with the judge); disagree: s_ref ≤ 0."),
]
LengthDiffQ = Annotated[int | None, Query(ge=-(2**31), le=MAX_INT32, description="chosen − rejected tokens.")]
SearchQ = Annotated[
    SafeStr | None, Query(max_length=200, description="Case-insensitive substring of any text.")
]


def _pair_cursor(cursor: str | None) -> tuple[int, int] | None:
    if cursor is None:
        return None
    try:
        iteration, idx = (int(part) for part in cursor.split(":"))
    except ValueError:
        raise bad_cursor("expected 'iteration:idx' as returned in next_cursor") from None
    if not (0 <= iteration <= MAX_INT32 and 0 <= idx <= MAX_INT32):
        raise bad_cursor("cursor out of range")
    return iteration, idx


def _pair_public(pair: Pair) -> PairPublic:
    length_diff = None
    if pair.chosen_length is not None and pair.rejected_length is not None:
        length_diff = pair.chosen_length - pair.rejected_length
    return PairPublic(
        id=pair.id,
        iteration=pair.iteration,
        idx=pair.idx,
        uid=pair.uid,
        prompt=pair.prompt,
        prompt_text=pair.prompt_text,
        chosen=pair.chosen_text,
        rejected=pair.rejected_text,
        score_chosen=pair.score_chosen,
        score_rejected=pair.score_rejected,
        chosen_length=pair.chosen_length,
        rejected_length=pair.rejected_length,
        chosen_chars=pair.chosen_chars,
        rejected_chars=pair.rejected_chars,
        ref_chosen_logps=pair.ref_chosen_logps,
        ref_rejected_logps=pair.ref_rejected_logps,
        s_ref=pair.s_ref,
        length_diff=length_diff,
        extra=pair.extra,
    )


@router.get("/{run_id}/pairs", response_model=PairPage, summary="Preference pairs (paginated, filterable)")
def list_pairs(
    run_id: RunId,
    session: SessionDep,
    iteration: IterationQ = None,
    agreement: AgreementQ = None,
    min_length_diff: LengthDiffQ = None,
    max_length_diff: LengthDiffQ = None,
    q: SearchQ = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[
        str | None, Query(max_length=40, description="next_cursor of the previous page.")
    ] = None,
    include_total: Annotated[bool, Query(description="Also count all matches (slower).")] = False,
) -> PairPage:
    """Pairs in (iteration, idx) order, one keyset page at a time."""
    load_run(session, run_id)
    pairs, next_cursor, total = query_pairs(
        session,
        run_id,
        limit=limit,
        cursor=_pair_cursor(cursor),
        include_total=include_total,
        iteration=iteration,
        agreement=agreement,
        min_length_diff=min_length_diff,
        max_length_diff=max_length_diff,
        q=q,
    )
    return PairPage(
        items=[_pair_public(p) for p in pairs],
        next_cursor=f"{next_cursor[0]}:{next_cursor[1]}" if next_cursor else None,
        total=total,
    )


EXPORT_TYPES = {"jsonl": "application/x-ndjson", "parquet": "application/vnd.apache.parquet"}


@router.get(
    "/{run_id}/pairs/export",
    response_class=StreamingResponse,
    summary="Export pairs (TRL format, JSONL or Parquet)",
    responses={
        200: {
            "description": "prompt/chosen/rejected messages plus scores, lengths and reference log-probs.",
            "content": {
                "application/x-ndjson": {
                    "example": '{"id": "p-0", "iteration": 0, "prompt": [{"role": "user", "content": "Hi"}], '
                    '"chosen": [{"role": "assistant", "content": "Hello!"}], '
                    '"rejected": [{"role": "assistant", "content": "No."}], "s_ref": 1.2}\n'
                },
                "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    },
)
def export_pairs(
    run_id: RunId,
    session: SessionDep,
    settings: SettingsDep,
    format: Annotated[Literal["jsonl", "parquet"], Query()] = "jsonl",
    iteration: IterationQ = None,
    agreement: AgreementQ = None,
    min_length_diff: LengthDiffQ = None,
    max_length_diff: LengthDiffQ = None,
    q: SearchQ = None,
) -> StreamingResponse:
    """Streams every matching pair; each batch is read in its own short transaction."""
    load_run(session, run_id)
    session.close()
    filters: dict[str, Any] = {
        "iteration": iteration,
        "agreement": agreement,
        "min_length_diff": min_length_diff,
        "max_length_diff": max_length_diff,
        "q": q,
    }
    batches = iter_pair_records(get_sessionmaker(settings.resolved_database_url), run_id, **filters)
    chunks = jsonl_chunks(batches) if format == "jsonl" else parquet_chunks(batches)
    suffix = "" if iteration is None else f"-iter{iteration}"
    return StreamingResponse(
        chunks,
        media_type=EXPORT_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="run-{run_id}{suffix}-pairs.{format}"'},
    )


def _eval_cursor(cursor: str | None) -> EvalCursor | None:
    if cursor is None:
        return None
    try:
        iteration, benchmark, evaluated, idx = cursor.split(":")
        parsed = (int(iteration), benchmark, evaluated, int(idx))
    except ValueError:
        raise bad_cursor("expected 'iteration:benchmark:evaluated:idx' as returned in next_cursor") from None
    in_range = 0 <= parsed[0] <= MAX_INT32 and 0 <= parsed[3] <= MAX_INT32
    if not in_range or "\x00" in benchmark or evaluated not in EVALUATED:
        raise bad_cursor("cursor out of range")
    return parsed


@router.get("/{run_id}/eval-samples", response_model=EvalSamplePage, summary="Evaluation samples (paginated)")
def list_eval_samples(
    run_id: RunId,
    session: SessionDep,
    iteration: IterationQ = None,
    benchmark: Annotated[SafeStr | None, Query(max_length=64)] = None,
    evaluated: Annotated[
        Literal["base", "policy"] | None,
        Query(description="'base' = θ_0 (evaluated in iteration 0), 'policy' = the iteration's θ_{k+1}."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=120)] = None,
) -> EvalSamplePage:
    """Model output vs baseline output with the judge's preference, in (iteration, benchmark,
    evaluated, idx) order: θ_0's answers come before iteration 0's policy answers."""
    load_run(session, run_id)
    samples, next_cursor, total = query_eval_samples(
        session,
        run_id,
        iteration=iteration,
        benchmark=benchmark,
        evaluated=evaluated,
        limit=limit,
        cursor=_eval_cursor(cursor),
    )
    return EvalSamplePage(
        items=[EvalSamplePublic.model_validate(s) for s in samples],
        next_cursor=":".join(str(p) for p in next_cursor) if next_cursor else None,
        total=total,
    )
