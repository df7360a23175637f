"""The dashboard's only door to the backend: HTTP calls, auth header, caching and errors.

Every page fetches through the functions below (never httpx directly), so that
* reads are cached for a few seconds (`st.cache_data(ttl=...)`) and a page full of charts costs
  a handful of requests, and writes (launch, cancel, …) clear that cache;
* a backend that is down, a wrong token or a bad config surfaces as an `ApiError` subclass
  whose message is written for users (pages show it; no traceback reaches the browser);
* responses come back exactly as the API's schemas (backend/schemas.py, docs/dashboard.md) define
  them: fields are read by their names, and a missing one is an error, not a guess. Turning them
  into tables and chart data is `dashboard.frames`' job.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import httpx
import streamlit as st

from dashboard.session import api_settings as load_api_settings
from dashboard.settings import SIGN_IN_SOURCE, ApiSettings

API_PREFIX = "/api/v1"
TIMEOUT_S = 10.0
LIVE_TTL_S = 3  # runs, stages: change while a run is running
DATA_TTL_S = 30  # metrics, iterations, pairs: grow slowly or never change
PREVIEW_TTL_S = 60  # launch previews: a config's cost; the queue length in it may change
RUN_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE_STATUSES = ("queued", "running")
MAX_RUNS_PAGE = 200  # the API's largest `limit` for GET /runs


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
    """A 422 body as FieldErrors: FastAPI's {"detail": [{"loc": [...], "msg": ...}, ...]}, or a
    string detail (one error at path '').

    The leading "body" of FastAPI locations is dropped so paths read like the config
    ('objective.alpha').
    """
    detail = body["detail"]
    if isinstance(detail, str):
        return (FieldError("", detail),)
    errors = []
    for item in detail:
        parts = [str(p) for p in item["loc"]]
        parts = parts[1:] if parts[:1] == ["body"] else parts
        errors.append(FieldError(".".join(parts), str(item["msg"])))
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


@cache
def http_client() -> httpx.Client:
    """The one HTTP client (connection pool) every call goes through; thread-safe."""
    return httpx.Client(timeout=TIMEOUT_S)


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
        response = http_client().request(
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
    return _post_response(path, body).json()


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


@dataclass(frozen=True)
class Page:
    """One page of a listing: the API's `items` with its `total`, `next_cursor` (cursor-paged
    listings) and `active` (GET /runs: runs queued or running, whatever the filters)."""

    items: list[dict[str, Any]]
    total: int | None = None
    next_cursor: str | None = None
    active: int | None = None


# ----------------------------------------------------------------------------- reads


def whoami(token: str | None = None) -> dict[str, Any]:
    """GET /me, uncached: {name, scope, operator} of `token` (default: this session's token).

    The sign-in form calls it with the token typed in; 401 (ApiUnauthorized) means it was refused.
    """
    settings = load_api_settings()
    if token is not None:
        settings = ApiSettings(url=settings.url, token=token, token_source=SIGN_IN_SOURCE)
    return _request(settings, "GET", "/me", timeout=5.0).json()


def health() -> dict[str, Any]:
    """GET /health, uncached: the connection check in the sidebar."""
    return _request(load_api_settings(), "GET", "/health", timeout=3.0).json()


def list_runs(
    *,
    status: str | None = None,
    objective: str | None = None,
    name: str | None = None,
    sweep_id: int | None = None,
    limit: int = MAX_RUNS_PAGE,
    offset: int = 0,
) -> Page:
    """GET /runs with the API's filters, newest first; each run carries its progress and latest
    evaluation, and `active` counts the queued or running runs (whatever the filters)."""
    body = _get(
        "/runs",
        {"status": status, "objective": objective, "name": name, "sweep_id": sweep_id, "limit": limit,
         "offset": offset},
    )  # fmt: skip
    return Page(items=body["items"], total=body["total"], active=body["active"])


def get_run(run_id: int) -> dict[str, Any]:
    """GET /runs/{id}: one RunPublic."""
    return _get(f"/runs/{run_id}")


def run_iterations(run_id: int) -> dict[str, Any]:
    """GET /runs/{id}/iterations: {items, base_evaluations, judge_label, self_judged}."""
    return _get(f"/runs/{run_id}/iterations", live=False)


def run_stages(run_id: int) -> list[dict[str, Any]]:
    """GET /runs/{id}/stages: every stage in execution order."""
    return _get(f"/runs/{run_id}/stages")["items"]


def stage_log(run_id: int, stage_id: int, *, tail_bytes: int = 64 * 1024) -> str:
    """The end of a stage's log (GET /runs/{id}/stages/{stage_id}/log, plain text; never cached)."""
    response = _request(
        load_api_settings(), "GET", f"/runs/{run_id}/stages/{stage_id}/log", params={"tail_bytes": tail_bytes}
    )
    return response.text


def metric_keys(run_id: int) -> dict[str, int]:
    """The metric names a run has recorded, with their point counts (GET /runs/{id}/metrics/keys)."""
    body = _get(f"/runs/{run_id}/metrics/keys", live=False)
    return {entry["key"]: entry["count"] for entry in body["items"]}


def metric_histories(
    run_id: int,
    keys: Iterable[str],
    *,
    points: int = 500,
    iteration: int | None = None,
    stage: str | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Several metrics' (downsampled) histories in one request: key → its points (none: [])."""
    wanted = tuple(dict.fromkeys(keys))
    if not wanted:
        return {}
    body = _get(
        f"/runs/{run_id}/metrics",
        {"key": wanted, "points": points, "iteration": iteration, "stage": stage},
        live=False,
    )
    served = {series["key"]: series["points"] for series in body["series"]}
    return {key: served.get(key, []) for key in wanted}


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
    """One page of GET /runs/{id}/pairs (PairPublic items); `agreement` is 'agree' (s_ref > 0) or
    'disagree'."""
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
    return Page(items=body["items"], total=body["total"], next_cursor=body["next_cursor"])


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
    """One page of GET /runs/{id}/eval-samples (EvalSamplePublic items)."""
    body = _get(
        f"/runs/{run_id}/eval-samples",
        {"iteration": iteration, "benchmark": benchmark, "limit": limit, "cursor": cursor},
        live=False,
    )
    return Page(items=body["items"], total=body["total"], next_cursor=body["next_cursor"])


def get_sweep(sweep_id: int) -> dict[str, Any]:
    """GET /sweeps/{id}: name, grid {dotted: [values]}, status counts and the child runs."""
    return _get(f"/sweeps/{sweep_id}")


def objectives() -> list[dict[str, Any]]:
    """GET /objectives: the objective registry (names, hyperparameters, defaults, formulas)."""
    return _get("/objectives", live=False)


# ----------------------------------------------------------------------------- writes


def _key_header(idempotency_key: str | None) -> dict[str, str]:
    return {"Idempotency-Key": idempotency_key} if idempotency_key else {}


def create_run(config: Mapping[str, Any], *, idempotency_key: str | None = None) -> dict[str, Any]:
    """POST /runs: validate, store and launch. ApiValidationError carries the field errors.

    With `idempotency_key`, a repeat returns the run the key already created; `replayed` says so.
    """
    response = _post_response("/runs", dict(config), _key_header(idempotency_key))
    return {**response.json(), "replayed": response.status_code == 200}


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
    return _post(f"/runs/{run_id}/cancel")


def resume_run(run_id: int) -> dict[str, Any]:
    """POST /runs/{id}/resume: re-queue a failed/cancelled run from its first unfinished stage."""
    return _post(f"/runs/{run_id}/resume")


def clone_run(
    run_id: int, overrides: Mapping[str, Any] | None = None, *, idempotency_key: str | None = None
) -> dict[str, Any]:
    """POST /runs/{id}/clone: a new run from the config with dotted-path overrides; returns it.

    With `idempotency_key` (one per click-intent), a repeat returns the clone the key already
    created; `replayed` says so, as for `create_run`.
    """
    body = {"overrides": dict(overrides or {})}
    response = _post_response(f"/runs/{run_id}/clone", body, _key_header(idempotency_key))
    return {**response.json(), "replayed": response.status_code == 200}


# --- lineage and comparison (issue 10 product) ---
# The API's bodies as sent (backend/schemas.py: PromptCandidatesPublic, EvalSampleLineagePublic,
# PairedDifferenceList); a run's evaluations come from run_iterations (frames.run_evaluations).

#: The API's cap on runs per lineage or comparison request (backend.schemas.MAX_COMPARED_RUNS).
MAX_COMPARED_RUNS = 8


def prompt_candidates(run_id: int, iteration: int, prompt_id: str) -> dict[str, Any]:
    """GET …/prompts/{prompt_id}/candidates: every candidate of a pair's prompt (PromptCandidatesPublic)."""
    quoted = urllib.parse.quote(prompt_id, safe="")
    return _get(f"/runs/{run_id}/iterations/{iteration}/prompts/{quoted}/candidates", live=False)


def eval_sample_lineage(benchmark: str, prompt_id: str, run_ids: Iterable[int]) -> dict[str, Any]:
    """GET /lineage/eval-samples: one evaluation prompt across the runs' iterations (at most 8 runs)."""
    params = {"benchmark": benchmark, "prompt_id": prompt_id, "run_ids": tuple(run_ids)[:MAX_COMPARED_RUNS]}
    return _get("/lineage/eval-samples", params, live=False)


def paired_comparisons(benchmark: str, run_ids: Iterable[int]) -> list[dict[str, Any]]:
    """GET /comparisons/paired: b − a win rate with its paired SE for every pair of the runs."""
    params = {"benchmark": benchmark, "run_ids": tuple(run_ids)[:MAX_COMPARED_RUNS]}
    return _get("/comparisons/paired", params, live=False)["items"]
