"""The dashboard's only door to the backend: HTTP calls, caching, errors, and field mapping.

Every page fetches through the functions below (never httpx directly), so that
* reads are cached for a few seconds (`st.cache_data(ttl=...)`) and a page full of charts costs
  a handful of requests, and writes (launch, cancel, …) clear that cache;
* a backend that is down, a wrong token or a bad config surfaces as an `ApiError` subclass
  whose message is written for users (pages show it; no traceback reaches the browser);
* the mapping from the API's JSON (docs/architecture.md §8, backend/schemas) to the plain dicts and
  DataFrames the pages and charts use lives in ONE place: the `_normalise_*` helpers. Where
  the contract leaves a field's shape open, they accept the plausible variants.
"""

from __future__ import annotations

import json
import math
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import pandas as pd
import streamlit as st

from dashboard.session import api_settings as load_api_settings
from dashboard.settings import SIGN_IN_SOURCE, ApiSettings

API_PREFIX = "/api/v1"
TIMEOUT_S = 10.0
LIVE_TTL_S = 3  # runs, stages: change while a run is running
DATA_TTL_S = 30  # metrics, iterations, pairs: grow slowly or never change
PREVIEW_TTL_S = 60  # launch previews: a config's cost; the queue length in it may change
HEADLINE_BENCHMARK = "alpaca_eval"
EVAL_FIELDS = ("win_rate", "lc_win_rate", "avg_length")
HYPERPARAMETERS = ("beta", "alpha", "lambda_", "gamma")
RUN_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE_STATUSES = ("queued", "running")
MAX_RUNS_PAGE = 200  # the API's largest `limit` for GET /runs
# Trainer metric names (aipo_core.training.METRIC_KEYS), then TRL's spelling as a fallback.
CHOSEN_REWARD_KEYS = ("rewards_chosen", "rewards/chosen")
REJECTED_REWARD_KEYS = ("rewards_rejected", "rewards/rejected")
GRADIENT_WEIGHT_KEY = "gradient_weight_mean"
DEFAULT_CURVE_KEYS = ("loss", "margins", "accuracy", "nll")

# Used only when the backend has no GET /objectives: docs/objectives.md's table (+ the extra registered
# objectives) with aipo_core.objectives.OBJECTIVES' defaults. The API validates every launch anyway.
FALLBACK_OBJECTIVES: dict[str, dict[str, float]] = {
    "aipo": {"beta": 0.1, "alpha": 0.05, "lambda_": 0.2},
    "alpha_dpo": {"beta": 0.1, "alpha": 0.05},
    "dpo": {"beta": 0.1},
    "dpo_nll": {"beta": 0.1, "lambda_": 0.2},
    "simpo": {"beta": 2.0, "gamma": 0.5},
    "ipo": {"beta": 0.1},
    "rdpo": {"beta": 0.1, "alpha": 0.01},
}


# ----------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class FieldError:
    """One rejected config field: dotted path (e.g. 'objective.alpha') and the API's reason."""

    path: str
    message: str


class ApiError(Exception):
    """A request that did not succeed; `str(exc)` is meant for users."""

    def __init__(
        self, message: str, *, status: int | None = None, field_errors: tuple[FieldError, ...] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.field_errors = field_errors


class ApiUnavailable(ApiError):
    """The API could not be reached at all (not started, wrong URL, timeout)."""


class ApiUnauthorized(ApiError):
    """The API refused the bearer token (401/403)."""


class ApiNotFound(ApiError):
    """The run, stage or route does not exist (404)."""


class ApiValidationError(ApiError):
    """The API rejected a request body (422); `field_errors` names each bad field."""


def _detail_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300]
    detail = body.get("detail", body) if isinstance(body, dict) else body
    return detail if isinstance(detail, str) else str(detail)[:300]


def field_errors(body: Any) -> tuple[FieldError, ...]:
    """422 bodies as FieldErrors: FastAPI's {"detail": [{"loc": [...], "msg": ...}]} or {"errors": [...]}.

    The leading "body" of FastAPI locations is dropped so paths read like the config
    ('objective.alpha'); string-valued details become one error at path ''.
    """
    items: Any = body
    if isinstance(body, dict):
        items = body.get("detail", body.get("errors", body))
    if isinstance(items, str):
        return (FieldError("", items),)
    if not isinstance(items, list):
        return (FieldError("", str(items)),)
    errors = []
    for item in items:
        if not isinstance(item, dict):
            errors.append(FieldError("", str(item)))
            continue
        loc = item.get("loc", item.get("path", item.get("field", "")))
        if isinstance(loc, list | tuple):
            parts = [str(p) for p in loc]
            parts = parts[1:] if parts[:1] == ["body"] else parts
            loc = ".".join(parts)
        errors.append(FieldError(str(loc), str(item.get("msg", item.get("message", item)))))
    return tuple(errors)


def _raise_for_status(response: httpx.Response, settings: ApiSettings) -> None:
    status = response.status_code
    if status < 400:
        return
    if status == 403:
        raise ApiUnauthorized(
            f"Your token may not do this (HTTP 403): {_detail_text(response)}. Ask the operator for a "
            "write token (`aipo token create NAME`).",
            status=status,
        )
    if status == 401 and settings.token_source == SIGN_IN_SOURCE:
        raise ApiUnauthorized(
            f"The AIPO API at {settings.url} no longer accepts your token (HTTP 401); it may have been "
            "revoked. Sign out and sign in with a valid token.",
            status=status,
        )
    if status == 401:
        raise ApiUnauthorized(
            f"The AIPO API at {settings.url} rejected the token (HTTP {status}). Set AIPO_API_TOKEN to the "
            f"token `aipo up` printed (token source now: {settings.token_source}).",
            status=status,
        )
    if status == 404:
        detail = _detail_text(response) or f"{response.request.url.path} does not exist"
        raise ApiNotFound(detail[:1].upper() + detail[1:], status=status)
    if status == 422:
        try:
            errors = field_errors(response.json())
        except ValueError:
            errors = (FieldError("", response.text[:300]),)
        summary = "; ".join(f"{e.path}: {e.message}" if e.path else e.message for e in errors)
        raise ApiValidationError(
            f"The API rejected the request: {summary}", status=status, field_errors=errors
        )
    raise ApiError(f"The AIPO API answered HTTP {status}: {_detail_text(response)}", status=status)


# ----------------------------------------------------------------------------- transport


def _request(
    settings: ApiSettings,
    method: str,
    path: str,
    *,
    params: Mapping[str, Any] | None = None,
    json: Any = None,
    timeout: float = TIMEOUT_S,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """One HTTP call to `{url}/api/v1{path}`; None-valued params are left out."""
    auth = {"Authorization": f"Bearer {settings.token}"} if settings.token else {}
    headers = {**(headers or {}), **auth}
    query = {k: v for k, v in (params or {}).items() if v is not None and v != ""}
    try:
        response = httpx.request(
            method,
            f"{settings.url}{API_PREFIX}{path}",
            params=query,
            json=json,
            headers=headers,
            timeout=timeout,
        )
    except httpx.TimeoutException as exc:
        raise ApiUnavailable(
            f"The AIPO API at {settings.url} did not answer within {timeout:.0f} s."
        ) from exc
    except httpx.HTTPError as exc:
        raise ApiUnavailable(
            f"Cannot reach the AIPO API at {settings.url} ({type(exc).__name__}). Is it running? "
            "Start it with `aipo up`, or point AIPO_API_URL at it."
        ) from exc
    _raise_for_status(response, settings)
    return response


def _get_json(url: str, token: str, token_source: str, path: str, params: tuple[tuple[str, Any], ...]) -> Any:
    settings = ApiSettings(url=url, token=token, token_source=token_source)
    response = _request(settings, "GET", path, params=dict(params))
    try:
        return response.json()
    except ValueError as exc:
        raise ApiError(f"The API sent something that is not JSON for {path}.") from exc


# Two caches with different lifetimes; the key includes URL and token so two backends never mix.
_get_live = st.cache_data(ttl=LIVE_TTL_S, show_spinner=False, max_entries=512)(_get_json)
_get_data = st.cache_data(ttl=DATA_TTL_S, show_spinner=False, max_entries=1024)(_get_json)


def _get(path: str, params: Mapping[str, Any] | None = None, *, live: bool = True) -> Any:
    settings = load_api_settings()
    key = tuple(sorted((k, v) for k, v in (params or {}).items() if v is not None and v != ""))
    fetch = _get_live if live else _get_data
    return fetch(settings.url, settings.token, settings.token_source, path, key)


def _post_response(path: str, body: Any = None, headers: Mapping[str, str] | None = None) -> httpx.Response:
    """A write: sent uncached, then every cached read is dropped so pages show its effect."""
    response = _request(load_api_settings(), "POST", path, json=body, headers=headers)
    clear_cache()
    return response


def _post(path: str, body: Any = None) -> Any:
    response = _post_response(path, body)
    return response.json() if response.content else {}


def _preview_json(url: str, token: str, token_source: str, path: str, body_json: str) -> Any:
    settings = ApiSettings(url=url, token=token, token_source=token_source)
    return _request(settings, "POST", path, json=json.loads(body_json)).json()


# Previews have no side effects: cached per request body, so a page rerun costs no request.
_preview = st.cache_data(ttl=PREVIEW_TTL_S, show_spinner=False, max_entries=256)(_preview_json)


def _post_preview(path: str, body: Mapping[str, Any]) -> dict[str, Any]:
    settings = load_api_settings()
    body_json = json.dumps(body, sort_keys=True)
    return dict(_preview(settings.url, settings.token, settings.token_source, path, body_json))


def clear_cache() -> None:
    """Forget every cached read (after a write, or when the user presses Refresh)."""
    _get_live.clear()
    _get_data.clear()
    _preview.clear()


def _items(body: Any, *keys: str) -> list[Any]:
    """The list inside a response: the body itself, or body[key] for the first key present."""
    if isinstance(body, list):
        return body
    if isinstance(body, dict):
        for key in (*keys, "items", "results", "data"):
            if isinstance(body.get(key), list):
                return body[key]
    raise ApiError("The API sent an unexpected response shape (expected a list).")


# ----------------------------------------------------------------------------- field mapping


def _number(value: Any) -> float:
    """A float, NaN where the API sent null or something non-numeric."""
    try:
        result = float(value)
    except (TypeError, ValueError):
        return math.nan
    return result


def flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"alpaca_eval": {"win_rate": 1}} → {"alpaca_eval/win_rate": 1} (flat dicts pass through)."""
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


def _segments(key: str) -> list[str]:
    return key.replace(".", "/").split("/")


def headline_metrics(metrics: Mapping[str, Any], benchmark: str = HEADLINE_BENCHMARK) -> dict[str, float]:
    """win_rate / lc_win_rate / avg_length out of an iteration's eval metrics.

    Keys may be bare ('win_rate') or qualified ('alpaca_eval/win_rate', 'evaluate.alpaca_eval.win_rate');
    the last segment must match exactly (so 'win_rate_se' never passes for 'win_rate'), and a key
    naming `benchmark` wins over one naming another benchmark.
    """
    flat = flatten(metrics)
    result = {}
    for name in EVAL_FIELDS:
        matches = [k for k in flat if _segments(k)[-1] == name]
        preferred = [k for k in matches if benchmark in _segments(k)] or matches
        result[name] = _number(flat[preferred[0]]) if preferred else math.nan
    return result


def _first(data: Mapping[str, Any], *names: str, default: Any = None) -> Any:
    for name in names:
        if data.get(name) is not None:
            return data[name]
    return default


def hyperparameters(
    run: Mapping[str, Any],
    catalog: Mapping[str, Mapping[str, float]] | None = None,
) -> dict[str, float]:
    """The run's resolved objective hyperparameters: the API's if given, else config over defaults."""
    given = run.get("hyperparameters")
    if isinstance(given, Mapping):
        return {k: float(v) for k, v in given.items() if v is not None}
    objective = (run.get("config") or {}).get("objective") or {}
    defaults = (catalog or FALLBACK_OBJECTIVES).get(str(objective.get("name", run.get("objective"))), {})
    explicit = {k: objective[k] for k in HYPERPARAMETERS if objective.get(k) is not None}
    return {k: float(v) for k, v in {**defaults, **explicit}.items()}


def _normalise_run(run: Mapping[str, Any]) -> dict[str, Any]:
    config = run.get("config") or {}
    return {
        **run,
        "id": run.get("id"),
        "name": _first(run, "name", default=config.get("name", f"run {run.get('id')}")),
        "status": run.get("status", "queued"),
        "objective": _first(run, "objective", default=(config.get("objective") or {}).get("name", "")),
        "model": _first(run, "model", default=config.get("model", "")),
        "iterations": _first(run, "iterations", default=config.get("iterations")),
        "config": config,
    }


def _normalise_iteration(item: Mapping[str, Any], position: int) -> dict[str, Any]:
    metrics = _first(item, "metrics", "eval_metrics", "eval", default={})
    flat = flatten(metrics) if isinstance(metrics, Mapping) else {}
    pair_stats = item.get("pair_stats")
    return {
        "iteration": int(_first(item, "index", "iteration", default=position)),
        "status": item.get("status", ""),
        "started_at": item.get("started_at"),
        "finished_at": item.get("finished_at"),
        "stages": dict(item.get("stages") or {}),
        "metrics": flat,
        "pair_stats": dict(pair_stats) if isinstance(pair_stats, Mapping) else {},
        **headline_metrics(flat),
    }


def _normalise_stage(stage: Mapping[str, Any]) -> dict[str, Any]:
    progress = _number(stage.get("progress"))
    return {
        **stage,
        "iteration": int(_first(stage, "iteration", "iteration_index", default=0)),
        "name": stage.get("name", "?"),
        "status": stage.get("status", "pending"),
        "progress": 0.0 if math.isnan(progress) else min(max(progress, 0.0), 1.0),
        "message": stage.get("message") or "",
        "error": stage.get("error") or "",
    }


def _message_text(value: Any) -> str:
    """Text of a response given as a string or a TRL message list (last message's content)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and isinstance(value[-1], dict):
        return str(value[-1].get("content", ""))
    return ""


def _prompt_text(value: Any) -> str:
    if isinstance(value, list):
        users = [
            m.get("content", "") for m in value if isinstance(m, dict) and m.get("role", "user") == "user"
        ]
        return str(users[-1]) if users else _message_text(value)
    return _message_text(value)


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
)


def _normalise_pair(pair: Mapping[str, Any]) -> dict[str, Any]:
    """A pair as the dashboard uses it: texts as strings, numbers as floats (NaN when missing)."""
    chosen = _first(pair, "chosen_text", default=_message_text(pair.get("chosen")))
    rejected = _first(pair, "rejected_text", default=_message_text(pair.get("rejected")))
    row = {
        "id": _first(pair, "uid", "id", default=""),
        "iteration": int(_first(pair, "iteration", default=0)),
        "prompt_text": _first(pair, "prompt_text", default=_prompt_text(pair.get("prompt"))),
        "chosen_text": chosen,
        "rejected_text": rejected,
        **{name: _number(pair.get(name)) for name in PAIR_NUMBERS},
    }
    if math.isnan(row["chosen_chars"]):
        row["chosen_chars"] = float(len(chosen))
    if math.isnan(row["rejected_chars"]):
        row["rejected_chars"] = float(len(rejected))
    if math.isnan(row["s_ref"]):
        row["s_ref"] = row["ref_chosen_logps"] - row["ref_rejected_logps"]
    extra = pair.get("extra")
    row["extra"] = dict(extra) if isinstance(extra, Mapping) else {}
    return row


def _series_points(body: Any, key: str) -> list[Mapping[str, Any]]:
    """The points of `key` in a history response: {"series": [{key, points}]}, or a bare point list."""
    if isinstance(body, Mapping) and isinstance(body.get("series"), list):
        for series in body["series"]:
            if isinstance(series, Mapping) and series.get("key") == key:
                return list(series.get("points") or [])
        return []
    return _items(body, "points", "history")


def _normalise_points(points: list[Mapping[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(
        [
            {
                "iteration": int(_first(p, "iteration", default=0)),
                "stage": p.get("stage") or "",
                "step": int(_first(p, "step", default=0)),
                "value": _number(p.get("value")),
            }
            for p in points
        ],
        columns=["iteration", "stage", "step", "value"],
    )
    return frame.sort_values(["iteration", "step"], kind="stable").reset_index(drop=True)


# ----------------------------------------------------------------------------- reads


@dataclass(frozen=True)
class Page:
    """One page of a paginated listing."""

    items: list[dict[str, Any]]
    total: int | None = None
    next_cursor: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def whoami(token: str | None = None) -> dict[str, Any]:
    """GET /me, uncached: the name and scope of `token` (default: this session's token).

    The sign-in form calls it with the token typed in; 401 (ApiUnauthorized) means it was refused.
    """
    settings = load_api_settings()
    if token is not None:
        settings = ApiSettings(url=settings.url, token=token, token_source=SIGN_IN_SOURCE)
    body = _request(settings, "GET", "/me", timeout=5.0).json()
    return {
        "name": str(body.get("name", "?")),
        "scope": body.get("scope", "write"),
        "operator": bool(body.get("operator")),
    }


def health() -> dict[str, Any]:
    """GET /health, uncached: the connection check in the sidebar."""
    response = _request(load_api_settings(), "GET", "/health", timeout=3.0)
    body = response.json() if response.content else {}
    return body if isinstance(body, dict) else {"status": body}


def list_runs(
    *,
    status: str | None = None,
    objective: str | None = None,
    name: str | None = None,
    sweep_id: int | None = None,
    limit: int = MAX_RUNS_PAGE,
    offset: int = 0,
) -> Page:
    """GET /runs with the API's filters; newest first as the API orders them."""
    body = _get(
        "/runs",
        {
            "status": status,
            "objective": objective,
            "name": name,
            "sweep_id": sweep_id,
            "limit": limit,
            "offset": offset,
        },
    )
    runs = [_normalise_run(r) for r in _items(body, "runs")]
    total = body.get("total") if isinstance(body, dict) else None
    return Page(items=runs, total=int(total) if total is not None else len(runs))


def active_run_count() -> int:
    """How many runs are queued or running (decides whether pages keep refreshing)."""
    return sum(list_runs(status=status, limit=1).total or 0 for status in ACTIVE_STATUSES)


def get_run(run_id: int) -> dict[str, Any]:
    return _normalise_run(_get(f"/runs/{run_id}"))


def run_iterations(run_id: int) -> list[dict[str, Any]]:
    """GET /runs/{id}/iterations: per iteration its eval metrics (flat) and the headline numbers."""
    body = _get(f"/runs/{run_id}/iterations", live=False)
    items = [_normalise_iteration(it, i) for i, it in enumerate(_items(body, "iterations"))]
    return sorted(items, key=lambda it: it["iteration"])


def run_stages(run_id: int) -> list[dict[str, Any]]:
    body = _get(f"/runs/{run_id}/stages")
    stages = [_normalise_stage(s) for s in _items(body, "stages")]
    return sorted(stages, key=lambda s: (s.get("position", 0), s["iteration"]))


def stage_log(run_id: int, stage_id: int, *, tail_bytes: int = 64 * 1024) -> str:
    """The end of a stage's log (GET /runs/{id}/stages/{stage_id}/log, plain text; never cached)."""
    response = _request(
        load_api_settings(), "GET", f"/runs/{run_id}/stages/{stage_id}/log", params={"tail_bytes": tail_bytes}
    )
    return response.text


def metric_keys(run_id: int) -> dict[str, int]:
    """The metric names a run has recorded, with their point counts (GET /runs/{id}/metrics/keys)."""
    body = _get(f"/runs/{run_id}/metrics/keys", live=False)
    entries = _items(body, "keys")
    return {
        str(e["key"]): int(e.get("count", 0)) if isinstance(e, Mapping) else 0
        for e in entries
        if isinstance(e, Mapping) and "key" in e
    }


def metric_histories(
    run_id: int,
    keys: Iterable[str],
    *,
    points: int = 500,
    iteration: int | None = None,
    stage: str | None = None,
) -> dict[str, pd.DataFrame]:
    """Several metrics' (downsampled) histories in one request.

    Returns key → DataFrame[iteration, stage, step, value] (empty frame for a key never logged).
    """
    wanted = tuple(dict.fromkeys(keys))
    if not wanted:
        return {}
    body = _get(
        f"/runs/{run_id}/metrics",
        {"key": wanted, "points": points, "iteration": iteration, "stage": stage},
        live=False,
    )
    return {key: _normalise_points(_series_points(body, key)) for key in wanted}


def metric_history(
    run_id: int, key: str, *, points: int = 500, iteration: int | None = None, stage: str | None = None
) -> pd.DataFrame:
    """One metric's (downsampled) history: DataFrame[iteration, stage, step, value]."""
    return metric_histories(run_id, [key], points=points, iteration=iteration, stage=stage)[key]


def _present(keys: Mapping[str, int], candidates: tuple[str, ...]) -> str | None:
    return next((k for k in candidates if k in keys), None)


def reward_histories(run_id: int, *, points: int = 500) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Chosen and rejected reward histories of the train stage (empty frames when not logged)."""
    keys = metric_keys(run_id)
    chosen, rejected = _present(keys, CHOSEN_REWARD_KEYS), _present(keys, REJECTED_REWARD_KEYS)
    found = metric_histories(run_id, [k for k in (chosen, rejected) if k], points=points)
    empty = _normalise_points([])
    return found.get(chosen or "", empty), found.get(rejected or "", empty)


def list_pairs(
    run_id: int,
    *,
    iteration: int | None = None,
    agreement: str | None = None,
    min_length_diff: int | None = None,
    max_length_diff: int | None = None,
    q: str | None = None,
    limit: int = 25,
    cursor: str | None = None,
    include_total: bool = False,
) -> Page:
    """One page of GET /runs/{id}/pairs; `agreement` is 'agree' (s_ref > 0) or 'disagree'."""
    if agreement not in (None, "agree", "disagree"):
        raise ValueError(f"agreement: expected 'agree', 'disagree' or None, got {agreement!r}")
    body = _get(
        f"/runs/{run_id}/pairs",
        {
            "iteration": iteration,
            "agreement": agreement,
            "min_length_diff": min_length_diff,
            "max_length_diff": max_length_diff,
            "q": q,
            "limit": limit,
            "cursor": cursor,
            "include_total": "true" if include_total else None,
        },
        live=False,
    )
    pairs = [_normalise_pair(p) for p in _items(body, "pairs")]
    total = body.get("total") if isinstance(body, dict) else None
    next_cursor = body.get("next_cursor") if isinstance(body, dict) else None
    return Page(
        items=pairs,
        total=None if total is None else int(total),
        next_cursor=None if next_cursor in (None, "") else str(next_cursor),
    )


def all_pairs(
    run_id: int,
    *,
    iteration: int | None = None,
    cap: int = 5_000,
    page_size: int = 500,
) -> list[dict[str, Any]]:
    """Up to `cap` pairs of a run (following cursors), for distribution charts."""
    pairs: list[dict[str, Any]] = []
    cursor = None
    while len(pairs) < cap:
        page = list_pairs(run_id, iteration=iteration, limit=min(page_size, cap - len(pairs)), cursor=cursor)
        pairs.extend(page.items)
        cursor = page.next_cursor
        if cursor is None or not page.items:
            break
    return pairs


def pairs_frame(pairs: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Pairs as a DataFrame (the columns charts.length_vs_logprob etc. read) + length_diff in tokens."""
    frame = pd.DataFrame(
        list(pairs), columns=["id", "iteration", "prompt_text", "chosen_text", "rejected_text", *PAIR_NUMBERS]
    )
    frame["length_diff"] = frame["chosen_length"] - frame["rejected_length"]
    return frame


def export_pairs(
    run_id: int,
    *,
    fmt: str = "jsonl",
    iteration: int | None = None,
    agreement: str | None = None,
    min_length_diff: int | None = None,
    max_length_diff: int | None = None,
    q: str | None = None,
) -> bytes:
    """GET /runs/{id}/pairs/export (same filters as list_pairs) as bytes: a download, never cached."""
    if fmt not in ("jsonl", "parquet"):
        raise ValueError(f"fmt: expected 'jsonl' or 'parquet', got {fmt!r}")
    params = {
        "format": fmt,
        "iteration": iteration,
        "agreement": agreement,
        "min_length_diff": min_length_diff,
        "max_length_diff": max_length_diff,
        "q": q,
    }
    response = _request(
        load_api_settings(), "GET", f"/runs/{run_id}/pairs/export", params=params, timeout=120.0
    )
    return response.content


def eval_samples(
    run_id: int,
    *,
    iteration: int | None = None,
    benchmark: str | None = None,
    limit: int = 25,
    cursor: str | None = None,
) -> Page:
    body = _get(
        f"/runs/{run_id}/eval-samples",
        {"iteration": iteration, "benchmark": benchmark, "limit": limit, "cursor": cursor},
        live=False,
    )
    items = [dict(s) for s in _items(body, "samples")]
    next_cursor = body.get("next_cursor") if isinstance(body, dict) else None
    return Page(items=items, next_cursor=None if next_cursor in (None, "") else str(next_cursor))


def get_sweep(sweep_id: int) -> dict[str, Any]:
    """GET /sweeps/{id}: name, grid {dotted: [values]}, status counts and the child runs."""
    sweep = dict(_get(f"/sweeps/{sweep_id}"))
    sweep["runs"] = [_normalise_run(r) for r in sweep.get("runs") or []]
    sweep["grid"] = dict(sweep.get("grid") or {})
    return sweep


def objective_catalog() -> dict[str, dict[str, float]]:
    """Objective name → default hyperparameters: GET /objectives, else the built-in copy."""
    try:
        body = _get("/objectives", live=False)
    except ApiNotFound:
        return dict(FALLBACK_OBJECTIVES)
    if isinstance(body, Mapping):
        entries = [{"name": k, **(v if isinstance(v, Mapping) else {})} for k, v in body.items()]
    else:
        entries = [e for e in body if isinstance(e, Mapping)]
    catalog = {
        str(e["name"]): {k: float(v) for k, v in (e.get("defaults") or {}).items()}
        for e in entries
        if "name" in e
    }
    return catalog or dict(FALLBACK_OBJECTIVES)


def objective_weight_formula(name: str) -> str | None:
    """The objective's gradient-weight formula from GET /objectives (None if the API has none)."""
    try:
        body = _get("/objectives", live=False)
    except ApiNotFound:
        return None
    entries = body if isinstance(body, list) else []
    for entry in entries:
        if isinstance(entry, Mapping) and entry.get("name") == name:
            formula = entry.get("gradient_weight_formula")
            return str(formula) if formula else None
    return None


# ----------------------------------------------------------------------------- derived tables


def latest_eval(run_id: int) -> dict[str, float]:
    """Headline eval numbers of the run's last evaluated iteration (NaN when none yet)."""
    evaluated = [
        it
        for it in run_iterations(run_id)
        if not math.isnan(it["avg_length"]) or not math.isnan(it["win_rate"])
    ]
    if not evaluated:
        return {"eval_iteration": math.nan, **{name: math.nan for name in EVAL_FIELDS}}
    last = evaluated[-1]
    return {"eval_iteration": float(last["iteration"]), **{name: last[name] for name in EVAL_FIELDS}}


def _run_eval(run: Mapping[str, Any]) -> dict[str, float]:
    """The run's latest eval from the run body when the API includes it, else from its iterations."""
    summary = _first(run, "latest_eval", "latest_metrics", "summary")
    if isinstance(summary, Mapping) and summary:
        return {"eval_iteration": _number(summary.get("iteration")), **headline_metrics(summary)}
    try:
        return latest_eval(int(run["id"]))
    except ApiNotFound:
        return {"eval_iteration": math.nan, **{name: math.nan for name in EVAL_FIELDS}}


def runs_frame(runs: Iterable[Mapping[str, Any]], *, with_eval: bool = True) -> pd.DataFrame:
    """One row per run: identity, status, objective, hyperparameters and the latest win rates."""
    catalog = objective_catalog()
    rows = []
    for run in runs:
        hp = hyperparameters(run, catalog)
        row = {
            "id": run["id"],
            "name": run["name"],
            "status": run["status"],
            "objective": run["objective"],
            "model": run["model"],
            "iterations": run.get("iterations"),
            **{name: hp.get(name, math.nan) for name in HYPERPARAMETERS},
            "created_at": run.get("created_at"),
            "created_by": run.get("created_by"),
            "sweep_id": run.get("sweep_id"),
        }
        if with_eval:
            row.update(_run_eval(run))
        rows.append(row)
    columns = [
        "id",
        "name",
        "status",
        "objective",
        "model",
        "iterations",
        *HYPERPARAMETERS,
        "created_at",
        "created_by",
        "sweep_id",
        *(("eval_iteration", *EVAL_FIELDS) if with_eval else ()),
    ]
    return pd.DataFrame(rows, columns=columns)


def iterations_frame(run_names: Mapping[int, str]) -> pd.DataFrame:
    """Win rate vs length data (charts.win_rate_vs_length) for several runs: run, iteration, eval fields."""
    rows = [
        {
            "run": label,
            "run_id": run_id,
            "iteration": it["iteration"],
            **{name: it[name] for name in EVAL_FIELDS},
        }
        for run_id, label in run_names.items()
        for it in run_iterations(run_id)
    ]
    return pd.DataFrame(rows, columns=["run", "run_id", "iteration", *EVAL_FIELDS])


def sweep_point_value(run: Mapping[str, Any], dotted: str) -> Any:
    """A (dotted) override of a sweep run: its sweep_point entry, else the same path in its config."""
    point = run.get("sweep_point") or {}
    if dotted in point:
        return point[dotted]
    node: Any = run.get("config") or {}
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


# ----------------------------------------------------------------------------- writes


def _key_header(idempotency_key: str | None) -> dict[str, str]:
    return {"Idempotency-Key": idempotency_key} if idempotency_key else {}


def create_run(config: Mapping[str, Any], *, idempotency_key: str | None = None) -> dict[str, Any]:
    """POST /runs: validate, store and launch. ApiValidationError carries the field errors.

    With `idempotency_key`, a repeat returns the run the key already created; `replayed` says so.
    """
    response = _post_response("/runs", dict(config), _key_header(idempotency_key))
    return {**_normalise_run(response.json()), "replayed": response.status_code == 200}


def create_sweep(body: Mapping[str, Any], *, idempotency_key: str | None = None) -> dict[str, Any]:
    """POST /sweeps: {name, base_config, grid: {dotted: [values]}, max_concurrent}; `replayed` as
    for `create_run`."""
    response = _post_response("/sweeps", dict(body), _key_header(idempotency_key))
    return {**response.json(), "replayed": response.status_code == 200}


def preview_run(config: Mapping[str, Any]) -> dict[str, Any]:
    """POST /runs/preview: what the run would cost (creates nothing); 422s as for create_run."""
    return _post_preview("/runs/preview", config)


def preview_sweep(body: Mapping[str, Any]) -> dict[str, Any]:
    """POST /sweeps/preview: runs in the sweep, per-child costs and totals (creates nothing)."""
    return _post_preview("/sweeps/preview", body)


def cancel_run(run_id: int) -> dict[str, Any]:
    """POST /runs/{id}/cancel: stop the run's stages; returns the run."""
    return _normalise_run(_post(f"/runs/{run_id}/cancel"))


def resume_run(run_id: int) -> dict[str, Any]:
    """POST /runs/{id}/resume: re-queue a failed/cancelled run from its first unfinished stage."""
    return _normalise_run(_post(f"/runs/{run_id}/resume"))


def clone_run(
    run_id: int, overrides: Mapping[str, Any] | None = None, *, idempotency_key: str | None = None
) -> dict[str, Any]:
    """POST /runs/{id}/clone: a new run from the config with dotted-path overrides; returns it.

    With `idempotency_key` (one per click-intent), a repeat returns the clone the key already
    created; `replayed` says so, as for `create_run`.
    """
    body = {"overrides": dict(overrides or {})}
    response = _post_response(f"/runs/{run_id}/clone", body, _key_header(idempotency_key))
    return {**_normalise_run(response.json()), "replayed": response.status_code == 200}


# --- lineage and comparison (issue 10 product) ---
# Exact response shapes of backend/schemas.py (IterationList, PromptCandidatesPublic,
# EvalSampleLineagePublic, PairedDifferenceList): no alternative field names are tried.

#: The API's cap on runs per lineage or comparison request (backend.schemas.MAX_COMPARED_RUNS).
MAX_COMPARED_RUNS = 8


def run_evaluations(run_id: int) -> list[dict[str, Any]]:
    """Every evaluation of a run (EvaluationPublic dicts): θ_0's first, then θ_1, θ_2, … per benchmark,
    each with its rates, their SEs, why LC is unavailable, the judge and the sample size."""
    body = _get(f"/runs/{run_id}/iterations", live=False)
    found = list(body["base_evaluations"].values())
    for item in body["items"]:
        found += list(item["evaluations"].values())
    return sorted(found, key=lambda e: (e["benchmark"], e["policy_index"]))


def prompt_candidates(run_id: int, iteration: int, prompt_id: str) -> dict[str, Any]:
    """GET …/prompts/{prompt_id}/candidates: every candidate of a pair's prompt (PromptCandidatesPublic)."""
    quoted = urllib.parse.quote(prompt_id, safe="")
    return dict(_get(f"/runs/{run_id}/iterations/{iteration}/prompts/{quoted}/candidates", live=False))


def eval_sample_lineage(benchmark: str, prompt_id: str, run_ids: Iterable[int]) -> dict[str, Any]:
    """GET /lineage/eval-samples: one evaluation prompt across the runs' iterations (at most 8 runs)."""
    params = {"benchmark": benchmark, "prompt_id": prompt_id, "run_ids": tuple(run_ids)[:MAX_COMPARED_RUNS]}
    return dict(_get("/lineage/eval-samples", params, live=False))


def paired_comparisons(benchmark: str, run_ids: Iterable[int]) -> list[dict[str, Any]]:
    """GET /comparisons/paired: b − a win rate with its paired SE for every pair of the runs."""
    params = {"benchmark": benchmark, "run_ids": tuple(run_ids)[:MAX_COMPARED_RUNS]}
    return list(_get("/comparisons/paired", params, live=False)["items"])
