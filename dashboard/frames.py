"""API JSON → the tables and chart data the pages show: pure functions, no I/O, no Streamlit.

Inputs are the API's response bodies exactly as `dashboard.api_client` returns them (the schemas in
backend/schemas.py; docs/dashboard.md lists the fields read). Fields are read by their names, so
a renamed or missing field fails here, loudly, instead of showing an empty column. A value the API
sends as null (a rate the data cannot support, a length not measured) becomes NaN in a frame.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

#: Headline numbers of an evaluation, each rate with its standard error (docs/evaluation.md).
EVAL_FIELDS = ("win_rate", "win_rate_se", "lc_win_rate", "lc_win_rate_se", "avg_length")
#: The run table's evaluation columns: EVAL_FIELDS plus the protocol that produced them.
RUN_EVAL_COLUMNS = (
    "eval_iteration", *EVAL_FIELDS, "lc_unavailable_reason", "judge_label", "self_judged", "n", "seed",
)  # fmt: skip
PAIR_NUMBERS = (
    "score_chosen",
    "score_rejected",
    "chosen_length",
    "rejected_length",
    "chosen_chars",
    "rejected_chars",
    "ref_chosen_logps",
    "ref_rejected_logps",
    "s_ref",
    "length_diff",
)
POINT_COLUMNS = ["iteration", "stage", "step", "value"]
#: Trainer metric names (aipo_core.training.METRIC_KEYS) the Rewards tab and curves read.
CHOSEN_REWARD_KEY = "rewards_chosen"
REJECTED_REWARD_KEY = "rewards_rejected"
GRADIENT_WEIGHT_KEY = "gradient_weight_mean"
DEFAULT_CURVE_KEYS = ("loss", "margins", "accuracy", "nll")


def _float(value: float | None) -> float:
    return math.nan if value is None else float(value)


# ----------------------------------------------------------------------------- objectives


def objective_defaults(objectives: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """GET /objectives as {objective name: its default hyperparameters}."""
    return {o["name"]: dict(o["defaults"]) for o in objectives}


def hyperparameter_names(objectives: Iterable[Mapping[str, Any]]) -> tuple[str, ...]:
    """Every hyperparameter any registered objective uses, in registry order (the table's columns)."""
    return tuple(dict.fromkeys(name for o in objectives for name in o["hyperparameters"]))


def weight_formula(objectives: Iterable[Mapping[str, Any]], name: str) -> str:
    """The objective's gradient-weight formula (ObjectivePublic.gradient_weight_formula)."""
    return {o["name"]: o for o in objectives}[name]["gradient_weight_formula"]


def hyperparameters(run: Mapping[str, Any], objectives: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """The run's resolved hyperparameters: its config's values over the registry's defaults, for
    the hyperparameters its objective uses (a stored config lists the others as null)."""
    section = run["config"]["objective"]
    spec = {o["name"]: o for o in objectives}[section["name"]]
    explicit = {k: section[k] for k in spec["hyperparameters"] if section.get(k) is not None}
    return {k: float(v) for k, v in {**spec["defaults"], **explicit}.items()}


# ----------------------------------------------------------------------------- runs


def latest_evaluation_row(run: Mapping[str, Any]) -> dict[str, Any]:
    """RunPublic.latest_evaluation as the run table's columns (NaN / None before any evaluation)."""
    latest = run["latest_evaluation"]
    if latest is None:
        return {column: math.nan for column in RUN_EVAL_COLUMNS} | {
            "lc_unavailable_reason": None, "judge_label": None, "self_judged": None,
        }  # fmt: skip
    return {
        "eval_iteration": _float(latest["iteration"]),
        **{name: _float(latest[name]) for name in EVAL_FIELDS},
        "lc_unavailable_reason": latest["lc_unavailable_reason"],
        "judge_label": latest["judge_label"],
        "self_judged": latest["self_judged"],
        "n": float(latest["n"]),
        "seed": float(latest["seed"]),
    }


def runs_frame(runs: Iterable[Mapping[str, Any]], objectives: list[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per run: identity, status, objective, hyperparameters and its latest evaluation."""
    names = hyperparameter_names(objectives)
    rows = []
    for run in runs:
        hp = hyperparameters(run, objectives)
        rows.append(
            {
                "id": run["id"],
                "name": run["name"],
                "status": run["status"],
                "objective": run["objective"],
                "model": run["config"]["model"],
                "iterations": run["config"]["iterations"],
                **{name: hp.get(name, math.nan) for name in names},
                "created_at": run["created_at"],
                "created_by": run["created_by"],
                "sweep_id": run["sweep_id"],
                **latest_evaluation_row(run),
            }
        )
    columns = [
        "id", "name", "status", "objective", "model", "iterations", *names, "created_at", "created_by",
        "sweep_id", *RUN_EVAL_COLUMNS,
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def sweep_point_value(run: Mapping[str, Any], dotted: str) -> Any:
    """A sweep run's value of a grid parameter (RunPublic.sweep_point, keyed by dotted path)."""
    return run["sweep_point"][dotted]


# ----------------------------------------------------------------------------- iterations


def headline_benchmark(run: Mapping[str, Any]) -> str:
    """The benchmark a run's headline numbers come from: its config's first."""
    return run["config"]["evaluation"]["benchmarks"][0]


def iteration_rows(body: Mapping[str, Any], benchmark: str) -> list[dict[str, Any]]:
    """GET /runs/{id}/iterations' items as rows: index as `iteration`, status, the pair statistics
    (NaN before the rank stage), and `benchmark`'s evaluation of θ_{k+1} (NaN before it is judged)."""
    rows = []
    for item in body["items"]:
        evaluation = item["evaluations"].get(benchmark)
        stats = item["pair_stats"] or {}
        rows.append(
            {
                "iteration": item["index"],
                "status": item["status"],
                "stages": item["stages"],
                "metrics": item["eval_metrics"],
                "pairs": stats.get("pairs", 0),
                **{
                    k: _float(stats.get(k))
                    for k in ("agreement_rate", "mean_s_ref", "mean_chosen_length", "mean_rejected_length")
                },
                **{name: _float(evaluation[name] if evaluation else None) for name in EVAL_FIELDS},
                "lc_unavailable_reason": evaluation["lc_unavailable_reason"] if evaluation else None,
            }
        )
    return rows


def iterations_frame(bodies: Mapping[str, tuple[Mapping[str, Any], str]]) -> pd.DataFrame:
    """Win rate vs length data (charts.win_rate_vs_length) of several runs: {label: (GET
    /runs/{id}/iterations body, benchmark)} → run, iteration and the evaluation fields."""
    rows = [
        {"run": label, "iteration": row["iteration"], **{name: row[name] for name in EVAL_FIELDS}}
        for label, (body, benchmark) in bodies.items()
        for row in iteration_rows(body, benchmark)
    ]
    return pd.DataFrame(rows, columns=["run", "iteration", *EVAL_FIELDS])


# ----------------------------------------------------------------------------- metrics, pairs


def history_frame(points: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """MetricSeries.points as DataFrame[iteration, stage, step, value], in (iteration, step) order."""
    frame = pd.DataFrame(
        [
            {"iteration": p["iteration"], "stage": p["stage"], "step": p["step"], "value": _float(p["value"])}
            for p in points
        ],
        columns=POINT_COLUMNS,
    )
    return frame.sort_values(["iteration", "step"], kind="stable").reset_index(drop=True)


def pairs_frame(pairs: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """PairPublic items as a DataFrame (the columns charts.length_vs_logprob etc. read)."""
    rows = [
        {
            "id": pair["id"],
            "uid": pair["uid"],
            "iteration": pair["iteration"],
            "prompt_text": pair["prompt_text"],
            "chosen": pair["chosen"],
            "rejected": pair["rejected"],
            **{name: _float(pair[name]) for name in PAIR_NUMBERS},
            "extra": pair["extra"],
        }
        for pair in pairs
    ]
    return pd.DataFrame(
        rows, columns=["id", "uid", "iteration", "prompt_text", "chosen", "rejected", *PAIR_NUMBERS, "extra"]
    )


def run_evaluations(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """GET /runs/{id}/iterations' evaluations (EvaluationPublic) as one list: θ_0's first, then
    θ_1, θ_2, … per benchmark, each with its rates, their SEs, why LC is unavailable, the judge
    and the sample size (derived.evaluation_frame's input)."""
    found = list(body["base_evaluations"].values())
    for item in body["items"]:
        found += list(item["evaluations"].values())
    return sorted(found, key=lambda e: (e["benchmark"], e["policy_index"]))
