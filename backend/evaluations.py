"""Run-level evaluation summaries for GET /runs/{id}/iterations, cached per stored content.

LC is recomputed from every stored evaluation of a run (docs/evaluation.md): one pooled GLM over
up to (K + 1) × 805 judgements, about 100 ms at 15 iterations. The result depends only on the
stored judgements (ids, preferences, lengths) and the run's config, so the fitted summaries are
cached in this process under a BLAKE2 digest of exactly those values: a summary is reused only
for the same judgements, and any stored or replaced evaluation is refitted on the next read.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from aipo_core.eval_summary import Evaluation, EvaluationSummary, summarize_evaluations
from backend.store.eval_samples import run_evaluations

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from backend.store.models import Run

#: Runs whose summaries are kept (the dashboard shows a handful at a time).
CACHED_RUNS = 64
_cache: OrderedDict[bytes, list[EvaluationSummary]] = OrderedDict()
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
