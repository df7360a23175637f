"""Is one model's win rate really above another's? A paired difference on shared prompts.

Two evaluations on the same benchmark prompts (runs with the same evaluation.seed and limit
share their sample) are not independent: the same hard prompt is lost by both. Comparing their
win rates by the two separate SEs overstates the noise; differencing per prompt removes what the
prompts share (docs/evaluation.md):

    d_i = (preference_b,i − preference_a,i) × 100      (percentage points; preferences in [1, 2])
    difference = mean_i d_i,   SE = sd(d, ddof=1) / √n

over the n prompts both judged. The difference is "within noise" when its 95% interval,
difference ± 1.96·SE, covers 0. It is a raw win-rate difference: the LC rates of two runs come
from separate length fits and have no per-prompt form to difference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from aipo_core.winrate import normalize_preferences

Z_95 = 1.96
MIN_SHARED = 2


@dataclass(frozen=True)
class PairedDifference:
    """b − a in percentage points over `n` shared prompts; None with `reason` when undefined."""

    n: int
    difference: float | None
    se: float | None
    reason: str | None = None

    @property
    def within_noise(self) -> bool | None:
        """Whether the 95% interval difference ± 1.96·SE covers 0 (None when undefined)."""
        if self.difference is None or self.se is None:
            return None
        return abs(self.difference) <= Z_95 * self.se


def paired_difference(
    preferences_a: Mapping[str, float | None], preferences_b: Mapping[str, float | None]
) -> PairedDifference:
    """Win rate of b minus a on the prompts (ids) both judged, with its paired SE."""
    shared = sorted(k for k in preferences_a.keys() & preferences_b.keys())
    a = normalize_preferences([preferences_a[k] for k in shared])
    b = normalize_preferences([preferences_b[k] for k in shared])
    judged = ~np.isnan(a) & ~np.isnan(b)
    d = 100.0 * (b[judged] - a[judged])  # [n] per-prompt differences in points
    n = int(d.size)
    if n < MIN_SHARED:
        return PairedDifference(n, None, None, f"{n} prompts judged in both evaluations (< {MIN_SHARED})")
    return PairedDifference(n, float(d.mean()), float(d.std(ddof=1) / math.sqrt(n)))
