"""Checkpoint retention: which `iter_k/policy` folders a run keeps (`training.keep_policies`).

Every iteration k writes θ_{k+1} to `iter_k/policy` (hundreds of MB for SmolLM2, tens of GB for
7B models). After each evaluate stage the pipeline calls `prune_policies`, which keeps

* `all`: every policy;
* `last` (the default) or N: the newest one (N newest), and, while `keep_best_policy` is on
  (the default), the best one by LC win rate on the first benchmark. When any evaluated
  iteration has no LC estimate (the length-controlled GLM needs enough judged items), all of
  them are compared by raw win rate instead, and `policies.json` says so.

Whatever the setting, a policy a stage may still read is never deleted: `iter_j/policy` is read
by iteration j's evaluate and by iteration j+1's self_instruct, generate, rank and train, so it
becomes deletable only once iteration j's evaluate and iteration j+1's train are complete. Those
stages are skipped on resume (their summary files mark them complete), so resuming never needs a
deleted folder.

A folder is renamed to a hidden name before it is removed: existence means a complete artifact,
so a crash mid-removal must not leave a partial `policy/` behind. The decision and its reasons
are written to `runs/{id}/policies.json`.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aipo_core import artifacts
from aipo_core.config import RunConfig

POLICIES_FILE = "policies.json"
_DELETING = ".policy.deleting"
_ITERATION = re.compile(r"iter_(\d+)")


@dataclass
class Retention:
    """What `prune_policies` decided: iterations whose policy is kept or was deleted, and why."""

    kept: list[int] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)
    best: int | None = None
    metric: str | None = None
    notes: list[str] = field(default_factory=list)


def _policy_iterations(run: Path) -> list[int]:
    """Iterations whose `policy/` folder exists, ascending."""
    found = []
    for child in run.iterdir() if run.is_dir() else ():
        match = _ITERATION.fullmatch(child.name)
        if match and (child / "policy").is_dir():
            found.append(int(match.group(1)))
    return sorted(found)


def _stage_done(run: Path, k: int, stage: str) -> bool:
    return artifacts.is_complete(run / f"iter_{k}" / f"stage_{stage}.json")


def still_needed(run: Path, k: int, iterations: int) -> bool:
    """Whether a stage may still read `iter_k/policy` (θ_{k+1}); see the module docstring."""
    if not _stage_done(run, k, "evaluate"):
        return True
    return k + 1 < iterations and not _stage_done(run, k + 1, "train")


def _scores(run: Path, k_values: list[int], benchmark: str) -> tuple[dict[int, float], str | None, list[str]]:
    """Per evaluated iteration the LC win rate (or, if any lacks it, the raw win rate)."""
    summaries = {
        k: artifacts.read_json(run / f"iter_{k}" / "stage_evaluate.json")
        for k in k_values
        if _stage_done(run, k, "evaluate")
    }
    if not summaries:
        return {}, None, []
    for key in ("lc_win_rate", "win_rate"):
        metric = f"{benchmark}/{key}"
        values = {k: s.get(metric) for k, s in summaries.items()}
        if all(isinstance(v, int | float) for v in values.values()):
            notes = []
            if key == "win_rate":
                missing = sorted(k for k, s in summaries.items() if s.get(f"{benchmark}/lc_win_rate") is None)
                notes.append(f"best policy chosen by raw win rate: no LC win rate for iteration(s) {missing}")
            return {k: float(v) for k, v in values.items()}, metric, notes
    return {}, None, [f"no {benchmark} win rate recorded; no best policy kept"]


def _remove(folder: Path) -> None:
    """Rename, then delete: a crash leaves a hidden leftover, never a partial `policy/`."""
    doomed = folder.with_name(_DELETING)
    shutil.rmtree(doomed, ignore_errors=True)
    os.rename(folder, doomed)
    shutil.rmtree(doomed)


def prune_policies(artifact_root: Path | str, run_id: str, config: RunConfig) -> Retention:
    """Delete the policy folders `config.training.keep_policies` no longer keeps (idempotent)."""
    run = artifacts.run_dir(artifact_root, run_id)
    for leftover in run.glob(f"iter_*/{_DELETING}"):  # from a crash in the middle of a removal
        shutil.rmtree(leftover, ignore_errors=True)
    keep = config.training.keep_policies
    present = _policy_iterations(run)
    decision = Retention(kept=list(present))
    if keep == "all" or not present:
        return decision
    newest = 1 if keep == "last" else int(keep)
    protected = set(present[-newest:])
    benchmarks = config.evaluation.benchmarks
    if config.training.keep_best_policy and benchmarks:
        scores, decision.metric, decision.notes = _scores(run, _evaluated(run), benchmarks[0])
        if scores:
            # max by (score, k): ties go to the later policy.
            decision.best = max(scores, key=lambda k: (scores[k], k))
            protected.add(decision.best)
    for k in present:
        if k in protected or still_needed(run, k, config.iterations):
            continue
        _remove(run / f"iter_{k}" / "policy")
        decision.deleted.append(k)
    decision.kept = [k for k in present if k not in decision.deleted]
    _record(run, decision)
    return decision


def _evaluated(run: Path) -> list[int]:
    """Every iteration with a completed evaluate stage, whether or not its policy still exists."""
    return sorted(
        int(m.group(1))
        for child in run.iterdir()
        if (m := _ITERATION.fullmatch(child.name)) and _stage_done(run, int(m.group(1)), "evaluate")
    )


def _record(run: Path, decision: Retention) -> None:
    previous: dict[str, Any] = {}
    if (run / POLICIES_FILE).is_file():
        previous = artifacts.read_json(run / POLICIES_FILE)
    deleted = sorted(set(previous.get("deleted", [])) | set(decision.deleted))
    artifacts.write_json_atomic(run / POLICIES_FILE, {**asdict(decision), "deleted": deleted})
