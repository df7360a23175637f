"""The CLI's HTTP client for the backend (`aipo submit`, `aipo demo`): one place for auth,
base URL, retries with idempotency keys, and turning refusals into `aipo_cli.errors` (a 422's
`field.path: message` lines, 401/403 with what to do, an unreachable API)."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from aipo_cli.errors import ApiError, ApiServerError, ApiUnauthorized, ApiUnreachable

DEFAULT_API = "http://127.0.0.1:8000"
__all__ = ["DEFAULT_API", "ApiClient", "ApiError", "default_token", "error_lines"]


def default_token(home: Path) -> str | None:
    """AIPO_API_TOKEN, else the embedded deployment's `$AIPO_HOME/token`."""
    token = os.environ.get("AIPO_API_TOKEN")
    if token:
        return token
    path = home / "token"
    return path.read_text().strip() if path.is_file() else None


def error_lines(response: httpx.Response) -> list[str]:
    """`objective.alpha: Input should be ...` lines from FastAPI's 422 `detail` list."""
    try:
        detail = response.json().get("detail")
    except ValueError:
        return [response.text.strip() or f"HTTP {response.status_code}"]
    if isinstance(detail, list):
        lines = []
        for item in detail:
            loc = [str(p) for p in item.get("loc", []) if p != "body"]
            message = item.get("msg", item)
            lines.append(f"{'.'.join(loc)}: {message}" if loc else str(message))
        return lines
    return [str(detail)]


# Transient failures worth another try; the request may have reached the server, so creating
# calls carry an Idempotency-Key and a retry returns what the first attempt created.
RETRY_STATUSES = frozenset({502, 503, 504})


def new_idempotency_key() -> str:
    return str(uuid.uuid4())


class ApiClient:
    def __init__(
        self,
        api_url: str,
        token: str | None,
        timeout_s: float = 30.0,
        *,
        attempts: int = 3,
        retry_wait_s: float = 1.0,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._has_token = bool(token)
        self._http = httpx.Client(
            base_url=api_url.rstrip("/") + "/api/v1", headers=headers, timeout=timeout_s
        )
        self._attempts = max(1, attempts)
        self._retry_wait_s = retry_wait_s

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request, retried (same headers, so the same Idempotency-Key) on timeouts, dropped
        connections and 502/503/504, waiting `retry_wait_s`, then twice that, between attempts."""
        for attempt in range(self._attempts - 1):
            try:
                response = self._http.request(method, path, **kwargs)
                if response.status_code not in RETRY_STATUSES:
                    return response
            except httpx.TransportError:
                pass
            time.sleep(self._retry_wait_s * 2**attempt)
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiUnreachable(f"cannot reach the API at {self._http.base_url}: {exc}") from None

    def _call(self, method: str, path: str, *, what: str | None = None, **kwargs: Any) -> Any:
        """The JSON answer, or the refusal as an `aipo_cli.errors.ApiError` naming `what` was refused."""
        response = self._send(method, path, **kwargs)
        status = response.status_code
        if status < 400:
            return response.json()
        lines = error_lines(response)
        if status == 401:
            reason = "the API refused the token" if self._has_token else "no token was given"
            raise ApiUnauthorized(f"401 Unauthorized: {reason}")
        if status == 403:
            raise ApiUnauthorized(
                f"403 Forbidden: {'; '.join(lines)}",
                hint="this token may only read; launching, cancelling and uploads need a write token",
            )
        if status >= 500:
            raise ApiServerError(f"the API failed on {method} {path} (HTTP {status})", details=lines)
        if status == 422 and what:
            raise ApiError(f"the API refused {what}", details=lines)
        raise ApiError(f"{method} {path}: HTTP {status}", details=lines)

    def submit_run(self, config: dict[str, Any], *, idempotency_key: str | None = None) -> dict[str, Any]:
        """POST /runs with an Idempotency-Key (a fresh one unless given): retries never duplicate."""
        key = idempotency_key or new_idempotency_key()
        return self._call(
            "POST", "/runs", what="the run config", json=config, headers={"Idempotency-Key": key}
        )

    def preview_run(self, config: dict[str, Any]) -> dict[str, Any]:
        """POST /runs/preview: what the run would cost; creates nothing."""
        return self._call("POST", "/runs/preview", what="the run config", json=config)

    def upload_pairs(self, path: Path) -> dict[str, Any]:
        """POST the preference JSONL at `path` to /uploads/pairs (streamed from disk); returns
        {"path", "pairs", "bytes"}, where `path` is the server-side file for `initial_pairs`."""
        with path.open("rb") as fh:
            return self._call(
                "POST",
                "/uploads/pairs",
                what=f"the preference file {path}",
                content=fh,
                headers={"Content-Type": "application/x-ndjson"},
            )

    def get_run(self, run_id: int) -> dict[str, Any]:
        return self._call("GET", f"/runs/{run_id}")

    def iterations(self, run_id: int) -> dict[str, Any]:
        """GET /runs/{id}/iterations: `items` per iteration plus θ_0's `base_evaluations`."""
        return self._call("GET", f"/runs/{run_id}/iterations")

    def stages(self, run_id: int) -> list[dict[str, Any]]:
        """GET /runs/{id}/stages: every stage of the run, in order, with status and timestamps."""
        return self._call("GET", f"/runs/{run_id}/stages")["items"]

    def stage_metrics(self, run_id: int, iteration: int, stage: str, keys: list[str]) -> dict[str, float]:
        """The latest value of each of `keys` logged by one stage (its summary is logged at step 0)."""
        params = {"iteration": iteration, "stage": stage, "key": keys, "points": 2}
        history = self._call("GET", f"/runs/{run_id}/metrics", params=params)
        return {
            series["key"]: series["points"][-1]["value"]
            for series in history.get("series", [])
            if series.get("points") and series["points"][-1].get("value") is not None
        }

    def close(self) -> None:
        self._http.close()
