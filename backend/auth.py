"""Bearer-token auth: one shared token per server.

The token comes from AIPO_API_TOKEN, or else from `$AIPO_HOME/token`, created on first start
with 0600 permissions (created with O_EXCL so two processes starting together agree on one).
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

TOKEN_FILE = "token"


def token_path(home: Path) -> Path:
    return home / TOKEN_FILE


def ensure_token_file(home: Path) -> str:
    """Read `$home/token`, creating it (0600, random 32 bytes, URL-safe) if it does not exist."""
    path = token_path(home)
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(32)
        # mkstemp: 0600 and a unique name per caller, threads of one process included.
        fd, tmp_name = tempfile.mkstemp(prefix=f".{TOKEN_FILE}.", suffix=".tmp", dir=home)
        tmp = Path(tmp_name)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(token + "\n")
        try:
            os.link(tmp, path)  # atomic, and fails if another process won the race
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        raise RuntimeError(f"{path} is empty; delete it to have a new token created")
    return token


def resolve_api_token(api_token: str | None, home: Path) -> str:
    """The configured token, else the embedded token file's."""
    return api_token if api_token else ensure_token_file(home)


def token_matches(given: str, expected: str) -> bool:
    """Constant-time comparison (no timing side channel on the token)."""
    return secrets.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))
