"""Run configs on the Launch page: defaults, form values → config, YAML round trips, error lookup.

Pure functions (no Streamlit) so the launch logic is testable; the API is the validator of
record (POST /runs answers 422 with field paths), this module only shapes what is sent and the
Idempotency-Key it is sent with.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from dashboard.api_client import FieldError

# docs/architecture.md §9's example config: what a fresh Launch page starts from.
DEFAULT_CONFIG: dict[str, Any] = {
    "name": "aipo-smollm2",
    "model": "smollm2-135m-instruct",
    "iterations": 2,
    "seed": 0,
    "prompt_pool": "self_instruct_seeds",
    "self_instruct": {"num_instructions": 32, "num_seed_examples": 8, "temperature": 0.5, "top_p": 0.9},
    "generation": {
        "backend": "hf",
        "num_candidates": 4,
        "temperature": 0.7,
        "top_p": 1.0,
        "max_new_tokens": 128,
    },
    "ranker": {"kind": "llm_judge", "model": "policy"},
    "objective": {"name": "aipo", "beta": 0.1, "alpha": 0.05, "lambda_": 0.2},
    "training": {
        "batch_size": 8,
        "learning_rate": 5.0e-7,
        "epochs": 1,
        "warmup_ratio": 0.1,
        "max_prompt_length": 512,
        "max_length": 1024,
    },
    "evaluation": {
        "benchmarks": ["alpaca_eval"],
        "limit": 32,
        "judge": {"kind": "llm_judge", "model": "policy"},
    },
}
MODEL_PRESETS = ("smollm2-135m-instruct", "tiny-random-llama")
RANKER_KINDS = ("llm_judge", "pairrm", "reward_model")
BENCHMARKS = ("alpaca_eval", "mt_bench", "arena_hard")
DEFAULT_GRID = "objective.alpha: [0.03, 0.05, 0.07]\nobjective.lambda_: [0.2, 0.5]\n"


def starting_config(source: Mapping[str, Any] | None) -> dict[str, Any]:
    """The config a form starts from: a copy of `source` (e.g. a run to relaunch) or the default.

    A stored run config lists every hyperparameter, unused ones as null; those are dropped
    because the API rejects hyperparameters an objective does not use.
    """
    config = copy.deepcopy(dict(source) if source else DEFAULT_CONFIG)
    objective = config.get("objective")
    if isinstance(objective, dict):
        config["objective"] = {k: v for k, v in objective.items() if v is not None}
    return config


def merge(base: Mapping[str, Any], updates: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `updates` applied recursively (sections merge, values replace)."""
    result = copy.deepcopy(dict(base))
    for key, value in updates.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def objective_section(name: str, values: Mapping[str, float | None], used: Iterable[str]) -> dict[str, Any]:
    """{"name": name, **hyperparameters}: only those the objective uses, only those set."""
    used = set(used)
    return {"name": name, **{k: float(v) for k, v in values.items() if k in used and v is not None}}


def hyperparameter_defaults(
    objective: str, config: Mapping[str, Any], catalog: Mapping[str, Mapping[str, float]]
) -> dict[str, float]:
    """Values the form shows for `objective`'s hyperparameters (the keys of its registry defaults,
    `catalog` = frames.objective_defaults of GET /objectives): the config's values when it is
    that objective, else the defaults."""
    defaults = dict(catalog[objective])
    section = config.get("objective") or {}
    if section.get("name") == objective:
        defaults.update({k: float(v) for k, v in section.items() if k in defaults and v is not None})
    return defaults


def to_yaml(config: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(config), sort_keys=False, allow_unicode=True)


def parse_yaml(text: str, *, what: str = "config") -> dict[str, Any]:
    """YAML text → mapping; ValueError with the line/column of a syntax error."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ValueError(f"{what}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{what}: must be a mapping of keys to values, got {type(data).__name__}")
    return data


def errors_under(errors: Iterable[FieldError], *prefixes: str) -> list[FieldError]:
    """The field errors at one of `prefixes` or inside one ('training' holds 'training.epochs')."""
    return [e for e in errors if any(e.path == p or e.path.startswith(f"{p}.") for p in prefixes)]


def submission_key(salt: str, kind: str, body: Mapping[str, Any]) -> str:
    """The Idempotency-Key of one form state: the same for the same request from the same browser
    session (so a double click or a rerun returns the first run), new when any field changes.

    `salt` is a random per-session secret, so two people launching identical configs under one
    shared token still get two runs.
    """
    canonical = json.dumps({"kind": kind, "body": body}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{salt}:{canonical}".encode()).hexdigest()[:48]
