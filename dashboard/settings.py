"""Where the dashboard finds the API: the one place that reads the dashboard's environment.

`AIPO_API_URL` (default http://127.0.0.1:8000) and `AIPO_API_TOKEN`; without a token in the
environment the embedded stack's token file `$AIPO_HOME/token` (AIPO_HOME default ~/.aipo) is
read, so `aipo up` and a dashboard started by hand find the same credentials.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_API_URL = "http://127.0.0.1:8000"


@dataclass(frozen=True)
class ApiSettings:
    """Base URL of the API (without /api/v1) and the bearer token ('' when none was found)."""

    url: str
    token: str
    token_source: str


def _token_file(home: str | None) -> Path:
    return Path(home or "~/.aipo").expanduser() / "token"


def load_api_settings(environ: dict[str, str] | None = None) -> ApiSettings:
    """Read AIPO_API_URL / AIPO_API_TOKEN / AIPO_HOME from `environ` (default: the process env)."""
    env = os.environ if environ is None else environ
    url = (env.get("AIPO_API_URL") or DEFAULT_API_URL).strip().rstrip("/")
    token = (env.get("AIPO_API_TOKEN") or "").strip()
    if token:
        return ApiSettings(url=url, token=token, token_source="AIPO_API_TOKEN")
    path = _token_file(env.get("AIPO_HOME"))
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError:
        return ApiSettings(url=url, token="", token_source=f"none (no AIPO_API_TOKEN and no {path})")
    return ApiSettings(url=url, token=token, token_source=str(path))
