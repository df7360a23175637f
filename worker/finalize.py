"""Recording a finished stage attempt and moving the run forward.

Success is ONE transaction that starts with the fenced UPDATE marking the stage `succeeded`
(only if this attempt still holds it). When that matches nothing, the attempt was superseded:
the transaction is rolled back and nothing of it is kept, neither rows nor files. When it
matches, the row stays locked (SQLite: the whole database) until the commit, so no other
attempt can claim the stage meanwhile, and under that lock the attempt's scratch folder is
published into `iter_{k}/` (marker last), the rows the dashboard queries (pairs, eval samples,
summary metrics) are loaded from it, and the next stage is queued; only then is the next wake-up
sent. A crash anywhere before the commit leaves the stage `running` with a dying heartbeat, so
the reconciler re-runs it (finding the artifact published, the stage body returns its summary);
a lost wake-up after the commit leaves the next stage `queued`, which the reconciler re-sends.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from aipo_core.artifacts import (
    discard_scratch,
    earlier_scratch_dirs,
    iteration_dir,
    publish,
    read_jsonl,
    scratch_dir,
    stage_marker_name,
)
from aipo_core.pipeline import PAIR_DIAGNOSTICS
from backend.db import session_scope
from backend.launcher import Launcher
from backend.lifecycle import launch_waiting_sweep_runs
from backend.store.eval_samples import replace_eval_samples
from backend.store.metrics import ingest_metrics
from backend.store.models import RUN_FINISHED
from backend.store.pairs import attach_pair_diagnostics, replace_pairs
from backend.store.runs import get_run
from backend.store.stages import (
    complete_stage,
    fail_stage,
    next_stage,
    queue_stage,
    retry_stage,
    skip_stage,
)
from worker.claimed import ClaimedStage
from worker.stage_process import StageOutcome

log = logging.getLogger(__name__)

#: The file or folder each stage produces inside `iter_{k}/` (docs/architecture.md §6).
STAGE_ARTIFACTS = {
    "self_instruct": "instructions.jsonl",
    "generate": "candidates.jsonl",
    "rank": "pairs.jsonl",
    "train": "policy",
    "evaluate": "eval",
}


def summary_points(
    summary: dict[str, Any], *, iteration: int, stage: str, attempt: int
) -> list[dict[str, Any]]:
    """A stage summary's numbers as metric points at step 0; nested dicts join keys with '/'."""
    points: list[dict[str, Any]] = []

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}/{key}" if prefix else str(key), value)
        elif isinstance(node, int | float) and not isinstance(node, bool):
            points.append(
                {
                    "iteration": iteration,
                    "stage": stage,
                    "attempt": attempt,
                    "key": prefix,
                    "step": 0,
                    "value": float(node),
                }
            )

    walk("", summary)
    return points


def load_stage_outputs(session: Session, claimed: ClaimedStage, stage_dir: Path) -> None:
    """Copy the rows the dashboard queries into the store: pairs after rank; after evaluate, the
    samples and each pair's objective diagnostics under the trained policy (merged into the pairs).

    `replace_*` deletes and re-inserts one iteration's rows, so a retried stage never duplicates.
    """
    if claimed.name == "rank":
        pairs = stage_dir / STAGE_ARTIFACTS["rank"]
        if pairs.exists():
            count = replace_pairs(session, claimed.run_id, claimed.iteration, read_jsonl(pairs))
            log.info("run %d iteration %d: stored %d pairs", claimed.run_id, claimed.iteration, count)
    elif claimed.name == "evaluate":
        diagnostics = stage_dir / PAIR_DIAGNOSTICS
        if diagnostics.exists():
            records = read_jsonl(diagnostics)
            count = attach_pair_diagnostics(session, claimed.run_id, claimed.iteration, records)
            log.info("run %d iteration %d: %d pair diagnostics", claimed.run_id, claimed.iteration, count)
        folder = stage_dir / STAGE_ARTIFACTS["evaluate"]
        # eval/{benchmark}.jsonl: θ_{k+1}; eval/base/{benchmark}.jsonl: θ_0 (iteration 0 only).
        for evaluated, pattern in (("policy", "*.jsonl"), ("base", "base/*.jsonl")):
            for path in sorted(folder.glob(pattern)):
                records = read_jsonl(path)
                count = replace_eval_samples(
                    session, claimed.run_id, claimed.iteration, path.stem, records, evaluated=evaluated
                )
                log.info(
                    "run %d iteration %d: stored %d %s samples of the %s model",
                    claimed.run_id,
                    claimed.iteration,
                    count,
                    path.stem,
                    evaluated,
                )


def record_success(
    claimed: ClaimedStage, summary: dict[str, Any], *, artifact_root: Path, launcher: Launcher
) -> bool:
    """Mark the stage done, publish and store its outputs, queue the next one (see the module doc).

    False when this attempt no longer holds the stage: then nothing was stored or published.
    """
    run_id, iteration, name, attempt = str(claimed.run_id), claimed.iteration, claimed.name, claimed.attempt
    stage_dir = iteration_dir(artifact_root, run_id, iteration)
    finished_sweep: int | None = None
    with session_scope() as session:
        if _finish(session, claimed, summary, artifact=stage_dir / STAGE_ARTIFACTS.get(name, "")) is None:
            session.rollback()
            log.warning(
                "stage %d attempt %d was cancelled or taken over meanwhile; discarding its outputs",
                claimed.stage_id,
                attempt,
            )
            return False
        scratch = scratch_dir(artifact_root, run_id, iteration, name, attempt)
        publish(scratch, stage_dir, marker=stage_marker_name(name))
        for leftover in [*earlier_scratch_dirs(artifact_root, run_id, iteration, name, attempt), scratch]:
            discard_scratch(leftover)  # earlier ones: attempts whose worker was killed
        load_stage_outputs(session, claimed, stage_dir)
        # The placement is stage metadata (served with the stage), not a metric.
        metrics = {key: value for key, value in summary.items() if key != "placement"}
        points = summary_points(metrics, iteration=iteration, stage=name, attempt=attempt)
        if points:
            ingest_metrics(session, claimed.run_id, points)
        following = next_stage(session, claimed.stage_id)
        if following is None:
            finished_sweep = _finished_sweep(session, claimed.run_id)
        else:
            _queue(session, following.id, launcher)
    _launch_sweep(finished_sweep, launcher)
    return True


def _finish(session: Session, claimed: ClaimedStage, summary: dict[str, Any], *, artifact: Path) -> Any:
    """The fenced status UPDATE that must come first: skipped or succeeded, if still ours."""
    if summary.get("skipped"):
        return skip_stage(
            session, claimed.stage_id, reason=f"skipped: {summary['skipped']}", attempt=claimed.attempt
        )
    return complete_stage(
        session,
        claimed.stage_id,
        artifact_path=str(artifact),
        attempt=claimed.attempt,
        placement=summary.get("placement"),
    )


def record_failure(
    claimed: ClaimedStage, outcome: StageOutcome, *, max_attempts: int, launcher: Launcher
) -> None:
    """A crash is retried while attempts remain; an error the stage body raised fails the run.

    Re-running a stage that raised (bad data, bad config) would raise again, so only crashes
    (killed by a signal, no result written) spend the retry budget.
    """
    error = outcome.error or "stage failed"
    finished_sweep: int | None = None
    with session_scope() as session:
        if outcome.crashed and claimed.attempt < max_attempts:
            log.warning(
                "stage %d attempt %d crashed; re-queueing: %s", claimed.stage_id, claimed.attempt, error
            )
            retry_stage(session, claimed.stage_id, launcher, error=error, attempt=claimed.attempt)
            return
        message = _with_attempts(error, claimed.attempt, outcome.crashed)
        if fail_stage(session, claimed.stage_id, message, attempt=claimed.attempt):
            finished_sweep = _finished_sweep(session, claimed.run_id)
    _launch_sweep(finished_sweep, launcher)


def _with_attempts(error: str, attempt: int, crashed: bool) -> str:
    return f"{error} (after {attempt} attempts)" if crashed else error


def _queue(session: Session, stage_id: int, launcher: Launcher) -> None:
    """Commit the next stage as queued and send its wake-up; an unsent wake-up is re-sent later."""
    try:
        queue_stage(session, stage_id, launcher)
    except Exception:  # noqa: BLE001 - the reconciler re-sends queued stages whose wake-up was lost
        log.exception("could not enqueue stage %d; the reconciler will re-send it", stage_id)


def _finished_sweep(session: Session, run_id: int) -> int | None:
    run = get_run(session, run_id)
    if run is not None and run.sweep_id is not None and run.status in RUN_FINISHED:
        return run.sweep_id
    return None


def _launch_sweep(sweep_id: int | None, launcher: Launcher) -> None:
    """A finished sweep run frees a slot: launch the next waiting run of its sweep."""
    if sweep_id is None:
        return
    with session_scope() as session:
        launched = launch_waiting_sweep_runs(session, sweep_id, launcher)
    if launched:
        log.info("sweep %d: launched runs %s", sweep_id, launched)
