"""The CLI's HTTP client for the backend (`aipo submit`, `aipo demo`): one place for auth,
base URL, retries with idempotency keys, and turning 422 responses into `field.path: message`
lines."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

DEFAULT_API = "http://127.0.0.1:8000"


class ApiError(RuntimeError):
    """A refused request, with the server's explanation (field paths for 422s)."""


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
            lines.append(f"{'.'.join(loc) or '(config)'}: {item.get('msg', item)}")
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
            raise ApiError(f"cannot reach the API at {self._http.base_url}: {exc}") from None

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
        if response.status_code == 401:
            raise ApiError("401 Unauthorized: pass --token or set AIPO_API_TOKEN")
        if response.status_code == 403:
            raise ApiError(f"403 Forbidden: {'; '.join(error_lines(response))}")
        if response.status_code >= 400:
            raise ApiError("\n".join(error_lines(response)))
        return response.json()

    def submit_run(self, config: dict[str, Any], *, idempotency_key: str | None = None) -> dict[str, Any]:
        """POST /runs with an Idempotency-Key (a fresh one unless given): retries never duplicate."""
        key = idempotency_key or new_idempotency_key()
        return self._call("POST", "/runs", json=config, headers={"Idempotency-Key": key})

    def preview_run(self, config: dict[str, Any]) -> dict[str, Any]:
        """POST /runs/preview: what the run would cost; creates nothing."""
        return self._call("POST", "/runs/preview", json=config)

    def upload_pairs(self, path: Path) -> dict[str, Any]:
        """POST the preference JSONL at `path` to /uploads/pairs (streamed from disk); returns
        {"path", "pairs", "bytes"}, where `path` is the server-side file for `initial_pairs`."""
        with path.open("rb") as fh:
            return self._call(
                "POST", "/uploads/pairs", content=fh, headers={"Content-Type": "application/x-ndjson"}
            )

    def get_run(self, run_id: int) -> dict[str, Any]:
        return self._call("GET", f"/runs/{run_id}")

    def iterations(self, run_id: int) -> dict[str, Any]:
        """GET /runs/{id}/iterations: `items` per iteration plus θ_0's `base_evaluations`."""
        return self._call("GET", f"/runs/{run_id}/iterations")

    def close(self) -> None:
        self._http.close()
