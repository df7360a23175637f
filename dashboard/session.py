"""Who is using this browser session, and with which token.

In login mode the token someone signs in with lives in `st.session_state` only: one browser
session, this server process's memory, gone on sign-out or when the session ends. It is never
written to disk, to the URL, or to a cache shared between sessions (cached reads are keyed by
the token, so one person's cached answers are not served to another). In server-token mode the
session uses the server's token (dashboard.settings).

`identity` is what the API's GET /me said about the token: {"name", "scope", "operator"}.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import streamlit as st

from dashboard.settings import LOGIN, SIGN_IN_SOURCE, ApiSettings, auth_mode, load_api_settings

TOKEN_KEY = "aipo_token"
IDENTITY_KEY = "aipo_identity"


def api_settings() -> ApiSettings:
    """The URL and the token this session's requests carry."""
    settings = load_api_settings()
    if auth_mode() == LOGIN:
        return replace(settings, token=st.session_state.get(TOKEN_KEY, ""), token_source=SIGN_IN_SOURCE)
    return settings


def needs_sign_in() -> bool:
    return auth_mode() == LOGIN and not st.session_state.get(TOKEN_KEY)


def sign_in(token: str, identity: dict[str, Any]) -> None:
    """Remember a token the API accepted, for this browser session only."""
    st.session_state[TOKEN_KEY] = token
    st.session_state[IDENTITY_KEY] = dict(identity)


def sign_out() -> None:
    st.session_state.pop(TOKEN_KEY, None)
    st.session_state.pop(IDENTITY_KEY, None)


def identity() -> dict[str, Any] | None:
    """GET /me's answer for this session's token (None until known)."""
    return st.session_state.get(IDENTITY_KEY)


def remember_identity(value: dict[str, Any]) -> None:
    st.session_state[IDENTITY_KEY] = dict(value)


def can_write() -> bool:
    """False for a read-only token: pages then hide or disable launch, cancel, resume and clone.
    Unknown identity counts as writable; the API refuses (403) what the token may not do anyway."""
    who = identity()
    return who is None or who.get("scope") != "read"
