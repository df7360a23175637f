"""Win rate and length-controlled (LC) win rate against a baseline, AlpacaEval 2.0 style, offline.

Preferences follow AlpacaEval: a value in [1, 2] per instruction, 2 = the model's output wins,
1 = the baseline wins, 1.5 = tie (0 is AlpacaEval's legacy tie code and is read as 1.5;
missing values are dropped). Weighted annotators give fractional preferences. The raw win
rate is mean(preference - 1) x 100, which reproduces the published `win_rate` exactly.

Length control. AlpacaEval 2.0 fits, per model, a logistic GLM of the (soft) preference on
a model intercept, `instruction_difficulty` (fitted across ~200 models; hub file
`df_gamed.csv`) and tanh(Δlen/σ) (Δlen = characters of output minus baseline, σ = std of
Δlen), then reports the mean predicted win probability with the length term set to 0. It
anchors the length slope with "gamed" verbose/concise baselines. Offline we have neither the
difficulties nor the gamed annotations, so this module fits its own MAP estimate:

    logit P(model wins on i) = b + γ·tanh(Δlen_i/σ) + δ·z_i

* z_i = standardised baseline length: the difficulty proxy. Instructions on which the
  reference writes long answers are the open-ended ones every model loses more often;
  without it the length term absorbs that and over-corrects (table below).
* γ ~ Normal(1.51, 0.39²): the empirical-Bayes prior, i.e. the mean and std of the 199
  length coefficients AlpacaEval published for this annotator and baseline
  (weights/weighted_alpaca_eval_gpt4_turbo/length_controlled_v1/baseline_gpt4_1106_preview.csv;
  there the sign is negative because they use baseline minus model). A free slope fitted on
  one model's judgements is confounded with difficulty and extrapolates badly for models that
  rarely win (free slope in the table below).
* b, δ ~ Normal(0, 2.5²): weakly informative, so all-win / all-loss inputs stay finite.

LC win rate = mean_i sigmoid(b + δ·z_i) x 100. Its standard error is the delta method on a
sandwich covariance (soft preferences are not Bernoulli, so the model-based covariance is
not trusted; see the numbers below).

Check against the published AlpacaEval 2.0 numbers (805 judgements each, test_winrate.py):

    model                        published LC (γ)   this MAP (γ)   MAP without z   no prior on γ (γ)
    gpt-3.5-turbo-1106              19.30 (2.04)      21.02 (1.72)       30.98          26.52 (2.20)
    gpt-3.5-turbo-1106_concise      15.77 (2.14)      16.03 (1.69)       28.55          26.03 (2.64)
    gpt-3.5-turbo-1106_verbose      22.00 (1.90)      24.58 (1.64)       32.91          25.99 (1.78)

(published γ: AlpacaEval's own slope for that model, fitted next to its instruction difficulty.)

(raw win rates 9.18 / 7.42 / 12.76 match the published ones exactly.) The sandwich SE of LC
(2.46 for gpt-3.5-turbo-1106) agrees with a 200-resample bootstrap (2.52); the model-based
Laplace SE (4.08) overstates it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_expit

from aipo_core.artifacts import read_jsonl

# Empirical-Bayes prior on the length slope (see the module docstring for the source).
PRIOR_LENGTH_SLOPE = 1.51
PRIOR_LENGTH_SLOPE_SD = 0.39
# Weakly informative prior (Gelman et al. 2008) on the intercept and the difficulty coefficient.
WEAK_PRIOR_SD = 2.5
# AlpacaEval's legacy code for a tie.
_LEGACY_TIE = 0.0

ANNOTATION_FORMATS = ("alpaca_eval", "aipo")


@dataclass(frozen=True)
class WinRateReport:
    """Head-to-head metrics of a model against a baseline. Rates are percentages (0-100)."""

    win_rate: float
    win_rate_se: float
    lc_win_rate: float
    lc_win_rate_se: float
    discrete_win_rate: float
    n_wins: int
    n_wins_base: int
    n_draws: int
    n: int
    n_missing: int
    avg_length: float
    length_slope: float
    difficulty_coef: float
    intercept: float

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON-safe dict: an undefined value (the SE of a single judgement) becomes None."""
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class LengthGLMFit:
    """MAP coefficients (intercept b, length slope γ, difficulty δ) and their sandwich covariance."""

    coef: np.ndarray  # [3] = (b, γ, δ)
    cov: np.ndarray  # [3, 3]


def normalize_preferences(preferences: Sequence[float | str | None]) -> np.ndarray:
    """Preferences as floats in [1, 2]; NaN where missing. Legacy ties (0) become 1.5.

    Raises ValueError naming the offending index for anything else outside [1, 2].
    """
    values = np.array([np.nan if p is None else float(p) for p in preferences], dtype=float)
    values[values == _LEGACY_TIE] = 1.5
    bad = ~np.isnan(values) & ((values < 1.0) | (values > 2.0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"preference[{i}] = {values[i]!r}: expected a value in [1, 2] (or 0/None)")
    return values


def _standardize(x: np.ndarray) -> np.ndarray:
    """(x - mean)/std, or zeros when x has no spread (the feature then carries no information)."""
    std = x.std(ddof=1) if x.size > 1 else 0.0
    if not std > 0:
        return np.zeros_like(x)
    return (x - x.mean()) / std


def length_features(output_lengths: np.ndarray, baseline_lengths: np.ndarray) -> np.ndarray:
    """Design matrix [n, 3]: (1, tanh(Δlen/σ), standardised baseline length).

    σ is the sample std of Δlen as in AlpacaEval; with no spread the length column is 0, which
    makes LC equal the fitted raw rate rather than dividing by zero.
    """
    delta = output_lengths - baseline_lengths
    std = delta.std(ddof=1) if delta.size > 1 else 0.0
    length = np.tanh(delta / std) if std > 0 else np.zeros_like(delta)
    return np.column_stack([np.ones_like(delta), length, _standardize(baseline_lengths)])


def _prior() -> tuple[np.ndarray, np.ndarray]:
    """Prior means and precisions of (b, γ, δ)."""
    mean = np.array([0.0, PRIOR_LENGTH_SLOPE, 0.0])
    precision = 1.0 / np.array([WEAK_PRIOR_SD, PRIOR_LENGTH_SLOPE_SD, WEAK_PRIOR_SD]) ** 2
    return mean, precision


def fit_length_glm(y: np.ndarray, x: np.ndarray) -> LengthGLMFit:
    """MAP logistic regression of soft labels y [n] in [0, 1] on the design x [n, 3].

    Soft labels enter the cross-entropy directly (y·log p + (1-y)·log(1-p)), which is what
    AlpacaEval's duplicated-rows trick computes.
    """
    prior_mean, prior_precision = _prior()

    def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
        s = x @ w  # [n]
        nll = -(y * log_expit(s) + (1.0 - y) * log_expit(-s)).sum()
        penalty = 0.5 * (prior_precision * (w - prior_mean) ** 2).sum()
        grad = x.T @ (expit(s) - y) + prior_precision * (w - prior_mean)
        return float(nll + penalty), grad

    result = minimize(objective, prior_mean, jac=True, method="BFGS", options={"gtol": 1e-8})
    # BFGS may stop on "precision loss" right at the optimum of this convex problem; only a
    # gradient that is still large means the fit is unusable.
    if not result.success and np.abs(result.jac).max() > 1e-4 * max(len(y), 1):
        raise RuntimeError(f"length-control GLM did not converge: {result.message}")
    w = result.x
    p = expit(x @ w)  # [n]
    hessian = (x * (p * (1.0 - p))[:, None]).T @ x + np.diag(prior_precision)  # [3, 3]
    residual_scores = x * (p - y)[:, None]  # [n, 3]
    meat = residual_scores.T @ residual_scores
    bread = np.linalg.inv(hessian)
    return LengthGLMFit(coef=w, cov=bread @ meat @ bread)


def length_controlled_rate(fit: LengthGLMFit, x: np.ndarray) -> tuple[float, float]:
    """(LC win rate, its delta-method SE), percentages: mean sigmoid with the length term at 0."""
    b, _, delta = fit.coef
    difficulty = x[:, 2]
    p = expit(b + delta * difficulty)  # [n]
    rate = float(p.mean())
    slope = p * (1.0 - p)
    grad = np.array([slope.mean(), 0.0, (slope * difficulty).mean()])  # d rate / d (b, γ, δ)
    se = math.sqrt(max(float(grad @ fit.cov @ grad), 0.0))
    return 100.0 * rate, 100.0 * se


def win_rates(
    preferences: Sequence[float | str | None],
    output_lengths: Sequence[int],
    baseline_lengths: Sequence[int],
) -> WinRateReport:
    """Raw and length-controlled win rate of a model against a baseline.

    preferences: AlpacaEval convention (1..2, 2 = model wins); lengths in characters, aligned
    with preferences. Missing preferences (None/NaN) are dropped together with their lengths.
    """
    prefs = normalize_preferences(preferences)
    out_len = np.asarray(output_lengths, dtype=float)
    base_len = np.asarray(baseline_lengths, dtype=float)
    if not (prefs.shape == out_len.shape == base_len.shape):
        raise ValueError(
            f"preferences ({prefs.size}), output_lengths ({out_len.size}) and baseline_lengths "
            f"({base_len.size}) must have the same length"
        )
    keep = ~np.isnan(prefs)
    if not keep.any():
        raise ValueError("preferences: no usable preference (all missing)")
    y = prefs[keep] - 1.0  # [n] in [0, 1]
    out_len, base_len = out_len[keep], base_len[keep]
    n = int(y.size)

    x = length_features(out_len, base_len)
    fit = fit_length_glm(y, x)
    lc, lc_se = length_controlled_rate(fit, x)
    n_wins, n_wins_base = int((y > 0.5).sum()), int((y < 0.5).sum())
    n_draws = n - n_wins - n_wins_base
    return WinRateReport(
        win_rate=100.0 * float(y.mean()),
        win_rate_se=100.0 * float(y.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan"),
        lc_win_rate=lc,
        lc_win_rate_se=lc_se,
        discrete_win_rate=100.0 * (n_wins + 0.5 * n_draws) / n,
        n_wins=n_wins,
        n_wins_base=n_wins_base,
        n_draws=n_draws,
        n=n,
        n_missing=int((~keep).sum()),
        avg_length=float(out_len.mean()),
        length_slope=float(fit.coef[1]),
        difficulty_coef=float(fit.coef[2]),
        intercept=float(fit.coef[0]),
    )


def _require(record: dict[str, Any], field: str, where: str) -> Any:
    if field not in record:
        raise ValueError(f"{where}: missing field {field!r}")
    return record[field]


def _read_alpaca_eval(path: Path) -> tuple[list[Any], list[int], list[int]]:
    """AlpacaEval annotations: a JSON list with output_1 (baseline), output_2 (model), preference."""
    records = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of annotations")
    prefs, out_len, base_len = [], [], []
    for i, rec in enumerate(records):
        where = f"{path}[{i}]"
        prefs.append(_require(rec, "preference", where))
        out_len.append(len(_require(rec, "output_2", where)))
        base_len.append(len(_require(rec, "output_1", where)))
    return prefs, out_len, base_len


def _read_aipo(path: Path) -> tuple[list[Any], list[int], list[int]]:
    """AIPO Lab eval/{benchmark}.jsonl records: preference, output_chars, baseline_chars."""
    prefs, out_len, base_len = [], [], []
    for i, rec in enumerate(read_jsonl(path)):
        where = f"{path} record {i}"
        prefs.append(_require(rec, "preference", where))
        out_len.append(int(_require(rec, "output_chars", where)))
        base_len.append(int(_require(rec, "baseline_chars", where)))
    return prefs, out_len, base_len


def winrate_from_annotations_file(
    path: str | Path, format: str = "alpaca_eval"
) -> dict[str, float | int | None]:
    """Metrics of an annotations file, as the dict `aipo winrate` prints.

    format: "alpaca_eval" (AlpacaEval annotations JSON) or "aipo" (our eval/{benchmark}.jsonl).
    """
    path = Path(path)
    readers = {"alpaca_eval": _read_alpaca_eval, "aipo": _read_aipo}
    if format not in readers:
        raise ValueError(f"format: {format!r} is not one of {ANNOTATION_FORMATS}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such annotations file")
    prefs, out_len, base_len = readers[format](path)
    return win_rates(prefs, out_len, base_len).to_dict()
