"""Where the dashboard finds the API and how it authenticates: the one place that reads its environment.

`AIPO_API_URL` (default http://127.0.0.1:8000) and `AIPO_DASHBOARD_AUTH`:

* `login` (the default): each person signs in with their own API token, kept in their browser
  session only (`dashboard.session`). The server's token is never read: neither
  `AIPO_API_TOKEN` nor `$AIPO_HOME/token`.
* `server-token`: the single-user convenience of `aipo up` on 127.0.0.1. Every visitor acts
  with `AIPO_API_TOKEN`, or else the embedded stack's `$AIPO_HOME/token` (AIPO_HOME default
  ~/.aipo). The dashboard refuses this mode unless it listens on a loopback address.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_API_URL = "http://127.0.0.1:8000"
LOGIN, SERVER_TOKEN = "login", "server-token"
AUTH_MODES = (LOGIN, SERVER_TOKEN)
LOOPBACK_ADDRESSES = frozenset({"127.0.0.1", "localhost", "::1"})
SIGN_IN_SOURCE = "your sign-in"


@dataclass(frozen=True)
class ApiSettings:
    """Base URL of the API (without /api/v1) and the bearer token ('' when none was found)."""

    url: str
    token: str
    token_source: str


def _token_file(home: str | None) -> Path:
    return Path(home or "~/.aipo").expanduser() / "token"


def auth_mode(environ: dict[str, str] | None = None) -> str:
    """`login` unless AIPO_DASHBOARD_AUTH says exactly `server-token` (anything else fails closed)."""
    env = os.environ if environ is None else environ
    requested = (env.get("AIPO_DASHBOARD_AUTH") or LOGIN).strip().lower()
    return SERVER_TOKEN if requested == SERVER_TOKEN else LOGIN


def is_loopback(address: str | None) -> bool:
    """True for 127.0.0.1 / localhost / ::1; an unset address means every interface."""
    return bool(address) and address in LOOPBACK_ADDRESSES


def api_url(environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return (env.get("AIPO_API_URL") or DEFAULT_API_URL).strip().rstrip("/")


def load_api_settings(environ: dict[str, str] | None = None) -> ApiSettings:
    """The server-token settings: AIPO_API_URL, AIPO_API_TOKEN or `$AIPO_HOME/token`.

    In login mode the token is left empty and no token source is read at all; the signed-in
    session supplies its own (`dashboard.session.api_settings`).
    """
    env = os.environ if environ is None else environ
    url = api_url(env)
    if auth_mode(env) == LOGIN:
        return ApiSettings(url=url, token="", token_source=SIGN_IN_SOURCE)
    token = (env.get("AIPO_API_TOKEN") or "").strip()
    if token:
        return ApiSettings(url=url, token=token, token_source="AIPO_API_TOKEN")
    path = _token_file(env.get("AIPO_HOME"))
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError:
        return ApiSettings(url=url, token="", token_source=f"none (no AIPO_API_TOKEN and no {path})")
    return ApiSettings(url=url, token=token, token_source=str(path))
