"""Quantities the dashboard derives from API data on the client: pure numpy/pandas, no I/O.

Kept apart from `charts` (which only draws) so a page can show a number and a chart of the
same derived value without computing it twice.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

# Objectives whose alpha scales the reference margin, Δπ − (1+α)Δref, and so enters Eq. 8's weight
# (aipo_core.objectives marks them `scales_reference`); in rdpo alpha is a length penalty instead.
REFERENCE_SCALING_OBJECTIVES = frozenset({"aipo", "alpha_dpo"})


def gradient_weights(
    s_ref: np.ndarray, s_theta: np.ndarray, *, beta: float, alpha: float = 0.0
) -> np.ndarray:
    """w = σ(β((1+α)s_ref − s_θ)) per pair (AIPO paper Eq. 8); inputs and output are [n]."""
    z = beta * ((1.0 + alpha) * np.asarray(s_ref, dtype=float) - np.asarray(s_theta, dtype=float))
    return 1.0 / (1.0 + np.exp(-z))


def pair_gradient_weights(
    pairs: pd.DataFrame, extras: list[Mapping], *, objective: str, hyperparameters: Mapping[str, float]
) -> tuple[np.ndarray, str]:
    """Per-pair gradient weights and a caption saying which policy margin they use.

    When the worker stored the trained policy's margin (`extra["s_theta"]`) or the weight itself
    (`extra["gradient_weight"]`), those are used; otherwise the weight at the start of training,
    where θ = θ_ref so s_θ = s_ref, which is what the objective pushes with on its first step.
    """
    if extras and all("gradient_weight" in e for e in extras):
        return np.asarray([e["gradient_weight"] for e in extras], dtype=float), "weights recorded by training"
    beta = float(hyperparameters.get("beta", 0.1))
    alpha = float(hyperparameters.get("alpha", 0.0)) if objective in REFERENCE_SCALING_OBJECTIVES else 0.0
    s_ref = pairs["s_ref"].to_numpy(dtype=float)
    if extras and all("s_theta" in e for e in extras):
        s_theta = np.asarray([e["s_theta"] for e in extras], dtype=float)
        caption = "after training (s_θ of the trained policy)"
    else:
        s_theta = s_ref
        caption = "at the start of training (θ = θ_ref, so s_θ = s_ref)"
    return gradient_weights(s_ref, s_theta, beta=beta, alpha=alpha), f"β = {beta:g}, α = {alpha:g}; {caption}"


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
