"""Who is calling: the operator's bootstrap token and personal API tokens.

* The bootstrap token comes from AIPO_API_TOKEN, or else from `$AIPO_HOME/token`, created on
  first start with 0600 permissions (with O_EXCL semantics so two processes starting together
  agree on one). It authenticates as "operator" with full rights; automation keeps using it.
* Personal tokens (`aipo token create NAME [--read-only]`) are random 256-bit strings shown once.
  Only their SHA-256 is stored. A slow, salted password hash (scrypt, argon2) exists to make
  guessing a low-entropy *password* from its hash expensive; a 256-bit random token cannot be
  guessed either way, so a plain hash loses nothing and lets every request find its token with
  one indexed lookup instead of trying a salted hash per stored row.

`Principal` is what the rest of the backend sees; `authorize` is the one rule for scopes:
a read-only principal may only use safe methods.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

from starlette.authentication import AuthenticationError, BaseUser

from backend.home import ensure_private_dir

TOKEN_FILE = "token"
OPERATOR = "operator"
PERSONAL_TOKEN_PREFIX = "aipo_"
READ, WRITE = "read", "write"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
TOKEN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


@dataclass(frozen=True)
class Principal(BaseUser):
    """An authenticated caller: the token's name, its scope, and its row id (None for the operator).

    A Starlette user, so the access layer can hand it to routes as `request.user`.
    """

    name: str
    scope: str
    token_id: int | None = None

    @property
    def can_write(self) -> bool:
        return self.scope == WRITE

    @property
    def is_operator(self) -> bool:
        return self.token_id is None

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.name


class AccessDenied(AuthenticationError):
    """A request refused before it reached a route: 401 (who are you?) or 403 (not with this token)."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


def authorize(principal: Principal, method: str) -> None:
    """403 unless the principal may use `method`: read-only tokens get safe methods only."""
    if method.upper() not in SAFE_METHODS and not principal.can_write:
        raise AccessDenied(
            403, f"token {principal.name!r} is read-only; {method.upper()} needs a write token"
        )


def hash_token(token: str) -> str:
    """Hex SHA-256 of a token (what `api_tokens.token_hash` stores)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_personal_token() -> str:
    """A fresh personal token: recognisable prefix + 32 random bytes, URL-safe."""
    return PERSONAL_TOKEN_PREFIX + secrets.token_urlsafe(32)


def check_token_name(name: str) -> str:
    """`name` if it is a valid token name (letters, digits, `_.@-`, ≤ 64), else ValueError."""
    if not TOKEN_NAME.fullmatch(name):
        raise ValueError(
            f"token name {name!r}: 1-64 letters, digits, '_', '.', '@' or '-'; the first a letter or digit"
        )
    if name == OPERATOR:
        raise ValueError(f"token name {OPERATOR!r} is reserved for the bootstrap token")
    return name


def token_path(home: Path) -> Path:
    return home / TOKEN_FILE


def ensure_token_file(home: Path) -> str:
    """Read `$home/token`, creating it (0600, random 32 bytes, URL-safe) if it does not exist."""
    path = token_path(home)
    if not path.exists():
        ensure_private_dir(home)
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
    """The configured bootstrap token, else the embedded token file's."""
    return api_token if api_token else ensure_token_file(home)


def token_matches(given: str, expected: str) -> bool:
    """Constant-time comparison (no timing side channel on the bootstrap token)."""
    return secrets.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))
