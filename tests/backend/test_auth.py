"""Embedded API token: created once with 0600 permissions, configured tokens take precedence."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor

from backend.auth import ensure_token_file, resolve_api_token, token_matches, token_path


def test_token_file_is_created_private_and_reused(tmp_path) -> None:
    home = tmp_path / "home"
    token = ensure_token_file(home)
    assert len(token) >= 32
    assert stat.S_IMODE(token_path(home).stat().st_mode) == 0o600
    assert ensure_token_file(home) == token


def test_concurrent_first_starts_agree_on_one_token(tmp_path) -> None:
    with ThreadPoolExecutor(8) as pool:
        tokens = set(pool.map(lambda _: ensure_token_file(tmp_path), range(16)))
    assert len(tokens) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["token"]


def test_configured_token_wins(tmp_path) -> None:
    assert resolve_api_token("configured", tmp_path) == "configured"
    assert not token_path(tmp_path).exists()
    assert token_matches("abc", "abc") and not token_matches("abc", "abd")
