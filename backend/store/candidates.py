"""Every candidate of one prompt, read from a run's artifact folder (the lineage API).

Candidates exist only as artifacts: `iter_{k}/candidates.jsonl` (generate stage: texts, token
lengths, whether each stopped at EOS) and `iter_{k}/candidate_scores.jsonl` (rank stage: every
candidate's score, which two it picked and why; `aipo_core.ranking.candidate_outcome`). This is
the only module that reads them, and it reads nothing whose real path (symlinks resolved) leaves
`{artifact_root}/runs/{run_id}/`: a link planted in an artifact folder cannot make the API serve
another file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aipo_core import artifacts
from aipo_core.pipeline import CANDIDATE_SCORES_FILE

CANDIDATES_FILE = "candidates.jsonl"


class ArtifactOutsideRun(Exception):
    """An artifact path that resolves outside its run's folder."""


@dataclass(frozen=True)
class PromptCandidates:
    """One prompt's candidates as generated, with the rank stage's scores when it recorded them.

    `scores` is None when the rank stage did not record them (it ran before candidate_scores.jsonl
    existed, or has not run); an entry is None for a candidate the ranker never scored (unfinished).
    `outcome` is "pair", a drop reason (aipo_core.ranking.DROP_REASONS, or "dropped_unfinished"), or
    None when unknown.
    """

    prompt_id: str
    instruction: str
    texts: list[str]
    lengths: list[int | None]
    finished: list[bool]
    scores: list[float | None] | None
    chosen: int | None
    rejected: int | None
    outcome: str | None


def _checked(run_folder: Path, path: Path) -> Path:
    """`path` with symlinks resolved, refused unless it stays inside `run_folder` (resolved)."""
    real, inside = path.resolve(), run_folder.resolve()
    if not real.is_relative_to(inside):
        raise ArtifactOutsideRun(f"{path} resolves outside the run's artifact folder")
    return real


def _records_with_id(path: Path, prompt_id: str) -> Iterator[dict[str, Any]]:
    """Records of a JSONL file whose `id` is `prompt_id`, parsing only lines that contain it."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if prompt_id not in line:
                continue
            record = json.loads(line)
            if isinstance(record, dict) and str(record.get("id")) == prompt_id:
                yield record


def _first(path: Path, prompt_id: str) -> dict[str, Any] | None:
    return next(_records_with_id(path, prompt_id), None) if path.is_file() else None


def read_prompt_candidates(
    artifact_root: Path, run_id: int, iteration: int, prompt_id: str
) -> PromptCandidates | None:
    """The candidates of `prompt_id` in iteration `iteration` of run `run_id`, or None when the
    iteration has no candidates.jsonl or the prompt is not in it."""
    run_folder = artifacts.run_dir(artifact_root, str(run_id))
    folder = artifacts.iteration_dir(artifact_root, str(run_id), iteration)
    record = _first(_checked(run_folder, folder / CANDIDATES_FILE), prompt_id)
    if record is None:
        return None
    texts = [str(t) for t in record.get("candidates", [])]
    scores_path = _checked(run_folder, folder / CANDIDATE_SCORES_FILE)
    scored = _first(scores_path, prompt_id)
    # The rank stage scores every prompt it kept; one missing from its file had < 2 finished candidates.
    outcome = scored.get("outcome") if scored else ("dropped_unfinished" if scores_path.is_file() else None)
    return PromptCandidates(
        prompt_id=prompt_id,
        instruction=str(record.get("instruction", "")),
        texts=texts,
        lengths=list(record.get("lengths") or [None] * len(texts)),
        # Records written before `finished` existed count as finished (aipo_core.ranking).
        finished=[bool(f) for f in record.get("finished") or [True] * len(texts)],
        scores=None if scored is None else list(scored["scores"]),
        chosen=None if scored is None else scored.get("chosen"),
        rejected=None if scored is None else scored.get("rejected"),
        outcome=outcome,
    )
