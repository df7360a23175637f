"""Quantities the dashboard derives from API data on the client: pure numpy/pandas, no I/O.

Kept apart from `charts` (which only draws) so a page can show a number and a chart of the
same derived value without computing it twice.
"""

from __future__ import annotations

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
