"""Quantities the dashboard derives from API data on the client: pure numpy/pandas, no I/O.

Kept apart from `charts` (which only draws) so a page can show a number and a chart of the
same derived value without computing it twice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd


def pair_gradient_weights(extras: list[Mapping | None]) -> tuple[np.ndarray, str]:
    """Per-pair gradient weights as the server computed them, and a caption saying which.

    The evaluate stage scores every pair under the trained policy θ_{k+1} and stores the run
    objective's own weight in `extra["gradient_weight"]` (aipo_core.objectives defines it per
    objective); the dashboard never recomputes it. Before that stage has run there is none.
    """
    if extras and all(isinstance(e, Mapping) and e.get("gradient_weight") is not None for e in extras):
        weights = np.asarray([e["gradient_weight"] for e in extras], dtype=float)
        return weights, "under the trained policy θ_{k+1}, as computed by the evaluate stage"
    return np.empty(0), "not available until this iteration's evaluate stage has scored the pairs"


def global_steps(frame: pd.DataFrame) -> pd.DataFrame:
    """Add `global_step`: each iteration's steps shifted past the previous iterations' last step.

    Training restarts its step counter every iteration; overlaying runs on one axis needs a
    monotone x. `frame` has columns iteration and step.
    """
    result = frame.sort_values(["iteration", "step"], kind="stable").copy()
    result["global_step"] = result["step"]
    if result.empty:
        return result
    base = int(result["step"].min())  # keep the first iteration's own numbering (0- or 1-based)
    offset = 0
    for iteration, rows in result.groupby("iteration", sort=True):
        first, last = int(rows["step"].min()), int(rows["step"].max())
        result.loc[result["iteration"] == iteration, "global_step"] = rows["step"] - first + base + offset
        offset += last - first + 1
    return result


# --------------------------------------------------------------------------- evaluations with their SEs

#: Columns of `evaluation_frame` (EvaluationPublic fields plus the run label).
EVALUATION_COLUMNS = [
    "run", "run_id", "benchmark", "policy_index", "iteration", "n", "win_rate", "win_rate_se",
    "lc_win_rate", "lc_win_rate_se", "lc_unavailable_reason", "avg_length", "judge", "judge_label",
    "self_judged",
]  # fmt: skip


def evaluation_frame(evaluations: list[Mapping], *, run: str, run_id: int) -> pd.DataFrame:
    """One row per evaluated θ_j of a run (frames.run_evaluations), NaN where undefined."""
    rows = [{"run": run, "run_id": run_id, **{k: e[k] for k in EVALUATION_COLUMNS[2:]}} for e in evaluations]
    frame = pd.DataFrame(rows, columns=EVALUATION_COLUMNS)
    numeric = ["win_rate", "win_rate_se", "lc_win_rate", "lc_win_rate_se", "avg_length"]
    frame[numeric] = frame[numeric].astype(float)
    return frame


def rate_text(value: float | None, se: float | None, reason: str | None = None) -> str:
    """A rate as a table shows it: "31.2 ± 7.1" (percent ± SE), "n/a (why)" when unavailable."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return f"n/a ({reason})" if reason else "n/a"
    if se is None or math.isnan(se):
        return f"{value:.1f} ± ? (SE undefined)"
    return f"{value:.1f} ± {se:.1f}"


def protocol_text(config: Mapping, evaluation: Mapping) -> str:
    """Who judged a number and on what sample: judge, benchmark, prompts judged, sample seed."""
    settings = config["evaluation"]
    limit = settings["limit"]
    sample = "all prompts" if limit is None else f"a seeded sample of {limit}"
    return (
        f"judge: {evaluation['judge_label']} · {evaluation['benchmark']}: {evaluation['n']} prompts judged "
        f"({sample}, evaluation seed {settings['seed']})"
    )


def deltas_from_base(frame: pd.DataFrame) -> pd.DataFrame:
    """Per run and benchmark, each θ_j (j ≥ 1) against θ_0 of the same run (paper Figs. 2–3).

    Columns: run, benchmark, policy_index, length_change_pct (100·(len_j − len_0)/len_0),
    lc_change and win_rate_change (points) with their SEs, lc_unavailable_reason. The SE of a
    change is √(SE_j² + SE_0²): it treats the two evaluations as independent, which overstates
    the noise when they share prompts (they do), so a flag resting on it is conservative.
    """
    rows = []
    for (run, benchmark), group in frame.groupby(["run", "benchmark"], sort=False):
        base = group[group["policy_index"] == 0]
        if base.empty:
            continue
        b = base.iloc[0]
        for _, e in group[group["policy_index"] > 0].sort_values("policy_index").iterrows():
            rows.append(
                {
                    "run": run,
                    "benchmark": benchmark,
                    "policy_index": int(e["policy_index"]),
                    "length_change_pct": 100.0 * (e["avg_length"] - b["avg_length"]) / b["avg_length"]
                    if b["avg_length"]
                    else math.nan,
                    "lc_change": e["lc_win_rate"] - b["lc_win_rate"],
                    "lc_change_se": math.hypot(e["lc_win_rate_se"], b["lc_win_rate_se"]),
                    "win_rate_change": e["win_rate"] - b["win_rate"],
                    "win_rate_change_se": math.hypot(e["win_rate_se"], b["win_rate_se"]),
                    "lc_unavailable_reason": e["lc_unavailable_reason"] or b["lc_unavailable_reason"],
                }
            )
    columns = [
        "run", "benchmark", "policy_index", "length_change_pct", "lc_change", "lc_change_se",
        "win_rate_change", "win_rate_change_se", "lc_unavailable_reason",
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)
