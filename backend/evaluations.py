"""Run-level evaluation summaries for GET /runs/{id}/iterations, cached per stored content.

LC is recomputed from every stored evaluation of a run (docs/evaluation.md): one pooled GLM over
up to (K + 1) × 805 judgements, about 100 ms at 15 iterations. The result depends only on the
stored judgements (ids, preferences, lengths) and the run's config, so the fitted summaries are
cached in this process under a BLAKE2 digest of exactly those values: a summary is reused only
for the same judgements, and any stored or replaced evaluation is refitted on the next read.

A list of runs carries each run's latest evaluation (`latest_evaluations`): one grouped query
fingerprints the page's judgements, and only runs whose fingerprint is not cached are read, all
in one more query, so GET /runs costs a bounded number of queries whatever the page size.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aipo_core.eval_summary import Evaluation, EvaluationSummary, summarize_evaluations
from backend.store.eval_samples import evaluation_fingerprints, run_evaluations, runs_evaluations

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from backend.store.models import Run

#: Runs whose summaries are kept (the dashboard shows a handful at a time).
CACHED_RUNS = 64
#: Runs whose summaries are kept for list pages (GET /runs serves up to 200 at once).
CACHED_LIST_RUNS = 512
_cache: OrderedDict[bytes, list[EvaluationSummary]] = OrderedDict()
_list_cache: OrderedDict[tuple[str, int, tuple[Any, ...], str], list[EvaluationSummary]] = OrderedDict()
_lock = threading.Lock()


def _digest(evaluations: Sequence[Evaluation], config: dict) -> bytes:
    """Digest of everything the summary reads: the config and every judgement's fields."""
    digest = hashlib.blake2b(json.dumps(config, sort_keys=True).encode(), digest_size=32)
    for ev in evaluations:
        columns = (ev.prompt_ids, ev.preferences, ev.output_chars, ev.baseline_chars, ev.output_tokens)
        digest.update(repr((ev.benchmark, ev.evaluated, ev.iteration, columns)).encode())
    return digest.digest()


def run_evaluation_summaries(session: Session, run: Run) -> list[EvaluationSummary]:
    """Every stored evaluation of `run` with raw and run-level LC win rates (aipo_core.eval_summary)."""
    evaluations = run_evaluations(session, run.id)
    key = _digest(evaluations, run.config)
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    summaries = summarize_evaluations(evaluations, run.run_config())
    with _lock:
        _cache[key] = summaries
        while len(_cache) > CACHED_RUNS:
            _cache.popitem(last=False)
    return summaries


def _headline(summaries: Sequence[EvaluationSummary], benchmarks: Sequence[str]) -> EvaluationSummary | None:
    """The latest evaluation (highest θ_j) on the run's first benchmark that has one."""
    for benchmark in (*benchmarks, *(s.benchmark for s in summaries)):
        own = [s for s in summaries if s.benchmark == benchmark]
        if own:
            return max(own, key=lambda s: s.policy_index)
    return None


def latest_evaluations(session: Session, runs: Sequence[Run]) -> dict[int, EvaluationSummary]:
    """Each run's latest evaluation (runs not yet evaluated: absent), in at most two queries."""
    fingerprints = evaluation_fingerprints(session, [r.id for r in runs])
    database = str(session.get_bind().url)  # run ids repeat across databases (tests, several homes)
    keys = {
        run.id: (database, run.id, fingerprints[run.id], json.dumps(run.config, sort_keys=True))
        for run in runs
        if run.id in fingerprints
    }
    with _lock:
        summaries = {run_id: _list_cache[key] for run_id, key in keys.items() if key in _list_cache}
    configs = {run.id: run.run_config() for run in runs if run.id in keys}
    missing = [run_id for run_id in keys if run_id not in summaries]
    evaluations = runs_evaluations(session, missing)
    for run_id in missing:
        summaries[run_id] = summarize_evaluations(evaluations.get(run_id, []), configs[run_id])
    with _lock:
        for run_id, key in keys.items():
            _list_cache[key] = summaries[run_id]
            _list_cache.move_to_end(key)
        while len(_list_cache) > CACHED_LIST_RUNS:
            _list_cache.popitem(last=False)
    latest = {}
    for run_id, config in configs.items():
        headline = _headline(summaries[run_id], config.evaluation.benchmarks)
        if headline is not None:
            latest[run_id] = headline
    return latest
