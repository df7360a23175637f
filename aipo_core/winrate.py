"""Win rate and length-controlled (LC) win rate against a baseline, offline (docs/evaluation.md).

Preferences follow AlpacaEval: a value in [1, 2] per instruction, 2 = the model's output wins,
1 = the baseline wins, 1.5 = tie (0 is AlpacaEval's legacy tie code and is read as 1.5;
missing values are dropped). Weighted annotators and our LLM judges give fractional preferences.
The raw win rate is mean(preference - 1) x 100, which reproduces the published `win_rate` exactly.

Length control asks AlpacaEval 2.0's question (Dubois et al. 2024, "Length-Controlled AlpacaEval"):
what would the judge have preferred had both answers been equally long? A logistic GLM of the
(soft) preference of evaluation k on prompt i,

    logit P(model k wins on i) = b_k + γ·tanh(Δlen_ik/σ) + δ·z_i

(Δlen = characters of output minus baseline, σ = std of Δlen, z_i = standardised baseline
length: a proxy for instruction difficulty, since open-ended prompts get long reference answers
and every model loses them more often), gives LC_k = mean_i sigmoid(b_k + δ·z_i) x 100, the
predicted win rate with the length term at 0. The length slope γ belongs to the JUDGE, so how
it is obtained depends on who judged (`slope_prior_for`):

* The judge AlpacaEval measured it on (`alpaca_eval:weighted_alpaca_eval_gpt4_turbo` against the
  gpt4_1106_preview baseline, i.e. also AlpacaEval's published annotations): γ is fixed at 1.51,
  the mean of the 199 per-model slopes AlpacaEval published for that annotator and baseline
  (weights/weighted_alpaca_eval_gpt4_turbo/length_controlled_v1/baseline_gpt4_1106_preview.csv,
  sign flipped: they use baseline minus model; sd across models 0.39). b and δ are fitted per
  evaluation, and the slope's spread enters the SE: SE² = SE²(b, δ) + (∂LC/∂γ)²·0.39².
* Every other judge (PairRM, a reward model, an LLM judge, the policy judging itself, another
  AlpacaEval annotator): γ and δ are estimated from that judge's own judgements, pooled over
  the evaluations given together (a run's θ_0 … θ_K on one benchmark, or a sweep's runs), with
  one strength b_k per evaluation. The SE is the delta method on a covariance clustered by
  prompt (the same prompts recur across evaluations; soft labels are not Bernoulli), which
  carries the slope's uncertainty into every LC.

The fits are statsmodels GLMs (Binomial, soft labels). When the judgements cannot identify LC
the rate is None and `lc_unavailable_reason` says why: fewer than MIN_JUDGEMENTS pooled
judgements, too few wins or losses per predictor, all of an evaluation's judgements on one side,
a constant non-zero length difference, perfect separation or no convergence, or a slope SE above
MAX_SLOPE_SE. With no length difference at all (Δlen = 0 everywhere) nothing needs controlling
and LC equals the raw rate.

Checks (tests/aipo_core/test_winrate.py):
* published AlpacaEval 2.0 judgements (805 each, data shipped in tests/data/alpaca_eval): raw
  win rates are exact; LC (prior slope) 18.85 / 14.52 / 23.21 vs published 19.30 / 15.77 / 22.00
  for gpt-3.5-turbo-1106 / _concise / _verbose. Estimating the slope from these same judgements
  instead (pooled over the three) gives γ = 2.14 ± 0.36 and LC 24.6 / 22.3 / 27.6: about five
  points above AlpacaEval's, whose instruction difficulties were fitted across ~200 models where
  ours is baseline length. An estimated-slope LC is comparable between evaluations by the same
  judge, not with numbers from other judges or methods.
* synthetic judgements from this GLM with γ = 0, 1.5, 3 at n = 805 and 128: the 95% interval
  covers the true LC in 91.5-96.5% of 200 datasets per setting (the AlpacaEval prior applied to
  every judge covered 76.5-80% at γ = 0); table in docs/evaluation.md.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit
from threadpoolctl import threadpool_limits

from aipo_core.artifacts import read_jsonl

# AlpacaEval's legacy code for a tie.
_LEGACY_TIE = 0.0
ANNOTATION_FORMATS = ("alpaca_eval", "aipo")

#: Judge name of the official AlpacaEval 2.0 annotator (the one the slope prior was measured on).
ALPACA_EVAL_GPT4_TURBO = "alpaca_eval:weighted_alpaca_eval_gpt4_turbo"

# Identifiability thresholds for an estimated slope (docs/evaluation.md#when-lc-is-unavailable).
#: Fewer pooled judgements than this: the sandwich SE itself is unreliable.
MIN_JUDGEMENTS = 50
#: Events (the rarer of wins and losses, soft-counted) needed per predictor, i.e. per coefficient
#: beyond one intercept (the usual events-per-variable rule; 5-10 suffices for logistic regression,
#: Vittinghoff & McCulloch 2007).
MIN_EVENTS_PER_PREDICTOR = 5
#: A slope known only to ±3 (95%) spans "no length bias" to "twice AlpacaEval's" and more: no
#: usable LC. (In the calibration simulations LC intervals still cover below this SE.)
MAX_SLOPE_SE = 1.5
#: Soft wins (or losses) below this in one evaluation: all its judgements are on one side.
MIN_SOFT_COUNT = 0.5
#: A coefficient this large (P = 1 - 5e-5 on its own) only comes from a diverging fit.
SEPARATION_LOGIT = 10.0


@dataclass(frozen=True)
class SlopePrior:
    """A length slope measured elsewhere for one judge against one baseline."""

    judge: str
    baseline: str
    mean: float
    sd: float
    source: str


SLOPE_PRIORS: tuple[SlopePrior, ...] = (
    SlopePrior(
        judge=ALPACA_EVAL_GPT4_TURBO,
        baseline="gpt4_1106_preview",
        mean=1.51,
        sd=0.39,
        source="AlpacaEval length_controlled_v1 weights, 199 models (tatsu-lab/alpaca_eval)",
    ),
)


def slope_prior_for(judge: str | None, baseline: str | None) -> SlopePrior | None:
    """The published slope for this judge and baseline, or None: then it is estimated."""
    for prior in SLOPE_PRIORS:
        if prior.judge == judge and prior.baseline == baseline:
            return prior
    return None


@dataclass(frozen=True)
class Judgements:
    """One evaluation: a model's outputs judged against the baseline, aligned per prompt.

    `prompt_ids` let pooled evaluations share prompts (the covariance is clustered by prompt);
    without them every judgement is its own cluster.
    """

    preferences: Sequence[float | str | None]
    output_chars: Sequence[float]
    baseline_chars: Sequence[float]
    prompt_ids: Sequence[str] | None = None


@dataclass(frozen=True)
class WinRateReport:
    """Head-to-head metrics of a model against a baseline. Rates are percentages (0-100).

    `lc_win_rate` and `lc_win_rate_se` are None when `lc_unavailable_reason` says why.
    `slope_source`: "prior" (published slope for this judge), "estimated" (from the judge's own
    judgements, pooled over `lc_pooled_evaluations` evaluations / `lc_pooled_n` judgements) or
    "not_needed" (no length difference anywhere).
    """

    win_rate: float
    win_rate_se: float
    lc_win_rate: float | None
    lc_win_rate_se: float | None
    lc_unavailable_reason: str | None
    judge: str | None
    slope_source: str
    length_slope: float | None
    length_slope_se: float | None
    lc_pooled_n: int
    lc_pooled_evaluations: int
    discrete_win_rate: float
    n_wins: int
    n_wins_base: int
    n_draws: int
    n: int
    n_missing: int
    avg_length: float
    difficulty_coef: float | None
    intercept: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: an undefined value (the SE of a single judgement) becomes None."""
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class _Clean:
    """One evaluation's judged rows: soft labels y [n] in [0, 1], lengths [n], cluster ids [n]."""

    y: np.ndarray
    output_chars: np.ndarray
    baseline_chars: np.ndarray
    clusters: np.ndarray
    n_missing: int

    @property
    def delta(self) -> np.ndarray:
        return self.output_chars - self.baseline_chars

    def one_sided(self) -> str | None:
        """Why this evaluation's strength b_k is not identified (all wins or all losses), or None.

        Wins and losses are soft counts (sum of y, sum of 1 - y); under half a judgement's worth
        on one side, b_k runs off to ±infinity.
        """
        wins, losses = float(self.y.sum()), float((1.0 - self.y).sum())
        if min(wins, losses) < MIN_SOFT_COUNT:
            side, other, count = (
                ("the baseline", "wins", wins) if wins < losses else ("the model", "losses", losses)
            )
            return (
                f"all {self.y.size} judgements favour {side} ({other} {count:.2f} < {MIN_SOFT_COUNT}): "
                "the model's strength is not identified"
            )
        return None


@dataclass(frozen=True)
class _LengthControl:
    """LC of one evaluation (or why there is none) and the slope it used."""

    rate: float | None
    se: float | None
    reason: str | None
    slope_source: str
    slope: float | None = None
    slope_se: float | None = None
    intercept: float | None = None
    difficulty_coef: float | None = None
    pooled_n: int = 0
    pooled_evaluations: int = 0


class NotIdentified(Exception):
    """The judgements cannot identify the length-controlled rate; the message says why."""


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


def _clean(judgements: Judgements, position: int) -> _Clean:
    prefs = normalize_preferences(judgements.preferences)
    out_len = np.asarray(judgements.output_chars, dtype=float)
    base_len = np.asarray(judgements.baseline_chars, dtype=float)
    ids = judgements.prompt_ids
    if not (prefs.shape == out_len.shape == base_len.shape) or (ids is not None and len(ids) != prefs.size):
        raise ValueError(
            f"evaluation {position}: preferences ({prefs.size}), output_lengths ({out_len.size}), "
            f"baseline_lengths ({base_len.size}) and prompt_ids must have the same length"
        )
    keep = ~np.isnan(prefs)
    if not keep.any():
        raise ValueError(f"evaluation {position}: preferences: no usable preference (all missing)")
    clusters = np.array(
        [str(i) for i in ids] if ids is not None else [f"{position}:{i}" for i in range(prefs.size)],
        dtype=object,
    )
    return _Clean(
        y=prefs[keep] - 1.0,
        output_chars=out_len[keep],
        baseline_chars=base_len[keep],
        clusters=clusters[keep],
        n_missing=int((~keep).sum()),
    )


def _standardize(x: np.ndarray) -> np.ndarray | None:
    """(x - mean)/std, or None when x has no spread (the feature then carries no information)."""
    std = x.std(ddof=1) if x.size > 1 else 0.0
    return (x - x.mean()) / std if std > 0 else None


def length_term(delta: np.ndarray) -> np.ndarray | None:
    """tanh(Δlen/σ) as in AlpacaEval, σ = sample std of Δlen.

    None when it is (numerically) the same for every judgement: Δlen constant, or varying so
    little around a non-zero value that tanh saturates; the term is then the intercept again.
    """
    std = delta.std(ddof=1) if delta.size > 1 else 0.0
    if not std > 0:
        return None
    length = np.tanh(delta / std)
    return length if np.ptp(length) > 1e-6 else None


@dataclass(frozen=True)
class LogisticFit:
    """A fitted length GLM: coefficients [p], the sandwich covariance clustered by prompt [p, p]
    (what SEs use), the model-based covariance (inverse Fisher information) [p, p], fitted P [n]."""

    coef: np.ndarray
    cov: np.ndarray
    model_cov: np.ndarray
    fitted: np.ndarray

    def identification_se(self, j: int) -> float:
        """The larger of the two SEs of coefficient j: a sandwich is near zero when a coefficient
        rests on a handful of exactly fitted judgements, the information is not."""
        return math.sqrt(max(float(self.cov[j, j]), float(self.model_cov[j, j]), 0.0))


def fit_logistic(
    y: np.ndarray, x: np.ndarray, *, clusters: np.ndarray, offset: np.ndarray | None = None
) -> LogisticFit:
    """Logistic GLM of soft labels y [n] on x [n, p].

    statsmodels' Binomial GLM takes y in [0, 1] directly (the cross-entropy AlpacaEval's
    duplicated-rows trick computes); the covariance is the sandwich clustered by `clusters`
    (with statsmodels' small-sample correction). Raises NotIdentified on perfect separation,
    non-convergence or a non-finite result.
    """
    # statsmodels takes seconds to import: only code that fits a GLM pays for it.
    from statsmodels.genmod import families
    from statsmodels.genmod.generalized_linear_model import GLM
    from statsmodels.tools.sm_exceptions import ConvergenceWarning, PerfectSeparationWarning

    _, codes = np.unique(clusters, return_inverse=True)
    # One BLAS thread: these matrices are thin (N × a few), threads only add contention (on a busy
    # 2-core machine a 12,880 × 18 fit took 2 s multi-threaded, 45 ms single-threaded).
    with threadpool_limits(limits=1), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = GLM(y, x, family=families.Binomial(), offset=offset).fit(
                cov_type="cluster", cov_kwds={"groups": codes}
            )
        except (np.linalg.LinAlgError, ValueError, ZeroDivisionError) as exc:
            raise NotIdentified(f"the length GLM could not be fitted ({exc})") from None
    categories = {w.category for w in caught}
    coef, cov = np.asarray(result.params), np.asarray(result.cov_params())
    model_cov = np.asarray(result.normalized_cov_params)  # (XᵀWX)⁻¹; the Binomial scale is 1
    # statsmodels also warns when soft labels are fitted exactly (fitted == y); only diverging
    # coefficients mean separation.
    separated = any(issubclass(c, PerfectSeparationWarning) for c in categories)
    if separated and not np.abs(coef).max() < SEPARATION_LOGIT:
        raise NotIdentified("perfect separation: length alone predicts every judgement")
    if not result.converged or any(issubclass(c, ConvergenceWarning) for c in categories):
        raise NotIdentified("the length GLM did not converge")
    if not (np.isfinite(coef).all() and np.isfinite(cov).all() and np.isfinite(model_cov).all()):
        raise NotIdentified("the length GLM gave non-finite coefficients")
    return LogisticFit(coef, cov, model_cov, np.asarray(result.fittedvalues))


def _delta_method_se(grad: np.ndarray, cov: np.ndarray) -> float:
    return math.sqrt(max(float(grad @ cov @ grad), 0.0))


def _raw_as_lc(ev: _Clean, source: str) -> _LengthControl:
    """No length difference anywhere: the counterfactual is what was observed (LC = raw)."""
    rate = float(ev.y.mean())
    se = float(ev.y.std(ddof=1) / math.sqrt(ev.y.size)) if ev.y.size > 1 else math.nan
    return _LengthControl(100.0 * rate, 100.0 * se, None, source, pooled_n=int(ev.y.size))


def _unavailable(reason: str, source: str, **extra: Any) -> _LengthControl:
    return _LengthControl(None, None, reason, source, **extra)


def _prior_lc(ev: _Clean, prior: SlopePrior) -> _LengthControl:
    """LC of one evaluation with the slope fixed at the prior mean; the prior's sd enters the SE."""
    fixed = {"slope": prior.mean, "slope_se": prior.sd, "pooled_n": int(ev.y.size), "pooled_evaluations": 1}
    if (reason := ev.one_sided()) is not None:
        return _unavailable(reason, "prior", **fixed)
    delta = ev.delta
    if not delta.any():
        return _raw_as_lc(ev, "not_needed")
    length = length_term(delta)
    if length is None:
        return _unavailable(_constant_delta_reason(delta), "prior", **fixed)
    z = _standardize(ev.baseline_chars)
    x = np.column_stack([np.ones_like(delta)] + ([] if z is None else [z]))  # [n, 1 or 2]
    try:
        fit = fit_logistic(ev.y, x, clusters=ev.clusters, offset=prior.mean * length)
    except NotIdentified as exc:
        return _unavailable(str(exc), "prior", **fixed)
    coef, cov, fitted = fit.coef, fit.cov, fit.fitted
    p = expit(x @ coef)  # [n] predicted wins with the length term at 0
    weight = p * (1.0 - p)
    grad = (x * weight[:, None]).mean(axis=0)  # d LC / d coef
    # How the fitted coef moves with γ (implicit function theorem on the score equations).
    w_fit = fitted * (1.0 - fitted)
    dcoef_dslope = -np.linalg.solve(x.T @ (x * w_fit[:, None]), x.T @ (w_fit * length))
    dlc_dslope = float(grad @ dcoef_dslope)
    se = math.sqrt(_delta_method_se(grad, cov) ** 2 + (dlc_dslope * prior.sd) ** 2)
    return _LengthControl(
        100.0 * float(p.mean()),
        100.0 * se,
        None,
        "prior",
        intercept=float(coef[0]),
        difficulty_coef=float(coef[1]) if z is not None else None,
        **fixed,
    )


def _constant_delta_reason(delta: np.ndarray) -> str:
    return (
        f"every output differs from the baseline by about the same {np.median(delta):+.0f} characters: "
        "the length effect cannot be told apart from the model's strength"
    )


def _estimated_lc(evaluations: Sequence[_Clean]) -> list[_LengthControl]:
    """LC of every evaluation with one slope and difficulty effect estimated from all of them."""
    results: dict[int, _LengthControl] = {}
    fittable = []
    for k, ev in enumerate(evaluations):
        if (reason := ev.one_sided()) is not None:
            results[k] = _unavailable(reason, "estimated", pooled_n=int(ev.y.size), pooled_evaluations=1)
        else:
            fittable.append(k)
    if fittable:
        pooled = _pooled_fit([evaluations[k] for k in fittable])
        results.update(zip(fittable, pooled, strict=True))
    return [results[k] for k in range(len(evaluations))]


def _pooled_fit(evaluations: Sequence[_Clean]) -> list[_LengthControl]:
    y = np.concatenate([ev.y for ev in evaluations])  # [N]
    delta = np.concatenate([ev.delta for ev in evaluations])  # [N]
    pooled = {"pooled_n": int(y.size), "pooled_evaluations": len(evaluations)}

    def all_unavailable(reason: str, **extra: Any) -> list[_LengthControl]:
        return [_unavailable(reason, "estimated", **pooled, **extra) for _ in evaluations]

    if not delta.any():
        return [_raw_as_lc(ev, "not_needed") for ev in evaluations]
    if y.size < MIN_JUDGEMENTS:
        return all_unavailable(
            f"too few judgements to estimate this judge's length slope ({y.size} < {MIN_JUDGEMENTS})"
        )
    length = length_term(delta)
    if length is None:
        return all_unavailable(_constant_delta_reason(delta))
    z = _standardize(np.concatenate([ev.baseline_chars for ev in evaluations]))
    sizes = [ev.y.size for ev in evaluations]
    owner = np.repeat(np.arange(len(evaluations)), sizes)  # [N] evaluation of each row
    strengths = (owner[:, None] == np.arange(len(evaluations))[None, :]).astype(float)  # [N, K]
    x = np.column_stack([strengths, length] + ([] if z is None else [z]))  # [N, K + 1 (+1)]
    events = min(float(y.sum()), float((1.0 - y).sum()))
    predictors = x.shape[1] - 1  # every column but one intercept
    if events < MIN_EVENTS_PER_PREDICTOR * predictors:
        return all_unavailable(
            f"too few wins or losses ({events:.1f}) for {predictors} predictors "
            f"(at least {MIN_EVENTS_PER_PREDICTOR} per predictor)"
        )
    try:
        glm = fit_logistic(y, x, clusters=np.concatenate([ev.clusters for ev in evaluations]))
    except NotIdentified as exc:
        return all_unavailable(str(exc))
    coef, cov = glm.coef, glm.cov
    k_slope = len(evaluations)
    slope, slope_se = float(coef[k_slope]), math.sqrt(max(float(cov[k_slope, k_slope]), 0.0))
    fit = {"slope": slope, "slope_se": slope_se}
    if (identification_se := glm.identification_se(k_slope)) > MAX_SLOPE_SE:
        return all_unavailable(
            f"this judge's length slope is not identified by these judgements "
            f"(γ = {slope:.2f}, SE {identification_se:.2f} above {MAX_SLOPE_SE})",
            **fit,
        )
    x_at_equal_length = x.copy()
    x_at_equal_length[:, k_slope] = 0.0
    results = []
    for k in range(len(evaluations)):
        rows = x_at_equal_length[owner == k]  # [n_k, K + 1 (+1)]
        p = expit(rows @ coef)  # [n_k]
        grad = (rows * (p * (1.0 - p))[:, None]).mean(axis=0)  # d LC_k / d coef
        results.append(
            _LengthControl(
                100.0 * float(p.mean()),
                100.0 * _delta_method_se(grad, cov),
                None,
                "estimated",
                intercept=float(coef[k]),
                difficulty_coef=float(coef[-1]) if z is not None else None,
                **fit,
                **pooled,
            )
        )
    return results


def _raw(y: np.ndarray, output_chars: np.ndarray) -> dict[str, Any]:
    """Raw head-to-head counts and rates of soft labels y [n] in [0, 1] (n >= 1)."""
    n = int(y.size)
    n_wins, n_wins_base = int((y > 0.5).sum()), int((y < 0.5).sum())
    n_draws = n - n_wins - n_wins_base
    return {
        "win_rate": 100.0 * float(y.mean()),
        "win_rate_se": 100.0 * float(y.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan,
        "discrete_win_rate": 100.0 * (n_wins + 0.5 * n_draws) / n,
        "n_wins": n_wins,
        "n_wins_base": n_wins_base,
        "n_draws": n_draws,
        "n": n,
        "avg_length": float(output_chars.mean()),
    }


def raw_win_rate(
    preferences: Sequence[float | str | None], output_lengths: Sequence[float]
) -> dict[str, Any]:
    """Raw win rate, its SE, discrete win rate, counts and average length (no length control).

    Missing preferences are dropped with their lengths; NaN (JSON: None) where undefined.
    """
    prefs = normalize_preferences(preferences)
    out_len = np.asarray(output_lengths, dtype=float)
    if prefs.shape != out_len.shape:
        raise ValueError(f"preferences ({prefs.size}) and output_lengths ({out_len.size}) differ in length")
    keep = ~np.isnan(prefs)
    if not keep.any():
        raise ValueError("preferences: no usable preference (all missing)")
    return _raw(prefs[keep] - 1.0, out_len[keep])


def _report(ev: _Clean, lc: _LengthControl, judge: str | None) -> WinRateReport:
    return WinRateReport(
        **_raw(ev.y, ev.output_chars),
        lc_win_rate=lc.rate,
        lc_win_rate_se=lc.se,
        lc_unavailable_reason=lc.reason,
        judge=judge,
        slope_source=lc.slope_source,
        length_slope=lc.slope,
        length_slope_se=lc.slope_se,
        lc_pooled_n=lc.pooled_n,
        lc_pooled_evaluations=lc.pooled_evaluations,
        n_missing=ev.n_missing,
        difficulty_coef=lc.difficulty_coef,
        intercept=lc.intercept,
    )


def pooled_win_rates(
    evaluations: Sequence[Judgements], *, judge: str | None = None, baseline: str | None = None
) -> list[WinRateReport]:
    """Raw and LC win rate of each evaluation, all judged by `judge` against `baseline`.

    With a published slope for (judge, baseline) each evaluation is length-controlled on its own;
    otherwise the slope is estimated once from all of them (pass every evaluation the same judge
    made on the same benchmark: a run's θ_0 … θ_K, or a sweep's).
    """
    if not evaluations:
        return []
    cleaned = [_clean(ev, k) for k, ev in enumerate(evaluations)]
    prior = slope_prior_for(judge, baseline)
    if prior is not None:
        controls = [_prior_lc(ev, prior) for ev in cleaned]
    else:
        controls = _estimated_lc(cleaned)
    return [_report(ev, lc, judge) for ev, lc in zip(cleaned, controls, strict=True)]


def win_rates(
    preferences: Sequence[float | str | None],
    output_lengths: Sequence[float],
    baseline_lengths: Sequence[float],
    *,
    judge: str | None = None,
    baseline: str | None = None,
) -> WinRateReport:
    """Raw and length-controlled win rate of one evaluation (see `pooled_win_rates`).

    preferences: AlpacaEval convention (1..2, 2 = model wins); lengths in characters, aligned
    with preferences. Missing preferences (None/NaN) are dropped together with their lengths.
    """
    (report,) = pooled_win_rates(
        [Judgements(preferences, output_lengths, baseline_lengths)], judge=judge, baseline=baseline
    )
    return report


def _require(record: dict[str, Any], field: str, where: str) -> Any:
    if field not in record:
        raise ValueError(f"{where}: missing field {field!r}")
    return record[field]


def _single(values: set[Any], field: str, path: Path) -> Any:
    """The one value a file-level field takes, None when absent; several values are an error."""
    values.discard(None)
    if len(values) > 1:
        raise ValueError(f"{path}: records disagree on {field!r} ({sorted(map(str, values))})")
    return next(iter(values), None)


@dataclass(frozen=True)
class _Annotations:
    preferences: list[Any]
    output_chars: list[int]
    baseline_chars: list[int]
    judge: str | None
    baseline: str | None


def _read_alpaca_eval(path: Path) -> _Annotations:
    """AlpacaEval annotations: a JSON list with output_1 (baseline), output_2 (model), preference.

    The judge is `alpaca_eval:<annotator>` and the baseline `generator_1`, when the file says.
    """
    records = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of annotations")
    prefs, out_len, base_len = [], [], []
    for i, rec in enumerate(records):
        where = f"{path}[{i}]"
        prefs.append(_require(rec, "preference", where))
        out_len.append(len(_require(rec, "output_2", where)))
        base_len.append(len(_require(rec, "output_1", where)))
    annotator = _single({r.get("annotator") for r in records}, "annotator", path)
    baseline = _single({r.get("generator_1") for r in records}, "generator_1", path)
    judge = None if annotator is None else f"alpaca_eval:{annotator}"
    return _Annotations(prefs, out_len, base_len, judge, baseline)


def _read_aipo(path: Path) -> _Annotations:
    """AIPO Lab eval/{benchmark}.jsonl records: preference, output_chars, baseline_chars (+ judge,
    baseline_model when the evaluate stage wrote them)."""
    records = read_jsonl(path)
    prefs, out_len, base_len = [], [], []
    for i, rec in enumerate(records):
        where = f"{path} record {i}"
        prefs.append(_require(rec, "preference", where))
        out_len.append(int(_require(rec, "output_chars", where)))
        base_len.append(int(_require(rec, "baseline_chars", where)))
    judge = _single({r.get("judge") for r in records}, "judge", path)
    baseline = _single({r.get("baseline_model") for r in records}, "baseline_model", path)
    return _Annotations(prefs, out_len, base_len, judge, baseline)


def winrate_from_annotations_file(
    path: str | Path, format: str = "alpaca_eval", *, judge: str | None = None, baseline: str | None = None
) -> dict[str, Any]:
    """Metrics of an annotations file, as the dict `aipo winrate` prints.

    format: "alpaca_eval" (AlpacaEval annotations JSON) or "aipo" (our eval/{benchmark}.jsonl).
    `judge`/`baseline` override what the file records (they decide whether the published
    slope applies; an unknown judge gets a slope estimated from this file alone).
    """
    path = Path(path)
    readers = {"alpaca_eval": _read_alpaca_eval, "aipo": _read_aipo}
    if format not in readers:
        raise ValueError(f"format: {format!r} is not one of {ANNOTATION_FORMATS}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such annotations file")
    data = readers[format](path)
    return win_rates(
        data.preferences,
        data.output_chars,
        data.baseline_chars,
        judge=judge or data.judge,
        baseline=baseline or data.baseline,
    ).to_dict()
