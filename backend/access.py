"""The access layer: every request is authenticated and authorised before its body is read.

FastAPI reads and parses a request body before it runs a route's dependencies, so a token
check in a dependency comes too late: a 200 MB unauthenticated POST would be received and
parsed first. Starlette's `AuthenticationMiddleware` runs on the request's headers alone; our
backend makes it *refuse* (instead of marking the request anonymous) anything but the public
paths: 401 without a valid token, 403 when a read-only token asks for a mutating method. The
route dependency `backend.deps.current_principal` only reads the result.

The body size limit is Starlette's `RequestBodyLimitMiddleware`, installed on every router by
FastAPI's `max_body_size` (AIPO_MAX_REQUEST_BYTES; the upload route has its own), so it runs
after authentication: a Content-Length above the limit is refused before a byte is read, and a
chunked body is counted as it streams.
"""

from __future__ import annotations

from fastapi.exception_handlers import http_exception_handler
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, AuthenticationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response

from backend.auth import (
    OPERATOR,
    PERSONAL_TOKEN_PREFIX,
    WRITE,
    AccessDenied,
    Principal,
    authorize,
    token_matches,
)
from backend.db import get_sessionmaker
from backend.store.tokens import principal_for

HEALTH_PATHS = frozenset({"/health", "/api/v1/health"})
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
BEARER = "bearer "


class TokenBackend(AuthenticationBackend):
    """Bearer tokens: the operator's bootstrap token, else a live personal token from the store."""

    def __init__(self, bootstrap_token: str, database_url: str, public_paths: frozenset[str]) -> None:
        self.bootstrap_token = bootstrap_token
        self.database_url = database_url
        self.public_paths = public_paths

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, Principal] | None:
        # CORS preflights carry no credentials; CORSMiddleware (outside this one) answers them.
        if (
            conn.scope["type"] != "http"
            or conn.url.path in self.public_paths
            or conn.scope["method"] == "OPTIONS"
        ):
            return None
        token = bearer_token(conn.headers.get("authorization"))
        if token is None:
            raise AccessDenied(401, "missing bearer token")
        principal = await self.resolve(token)
        if principal is None:
            raise AccessDenied(401, "invalid or revoked bearer token")
        authorize(principal, conn.scope["method"])
        return AuthCredentials([principal.scope]), principal

    async def resolve(self, token: str) -> Principal | None:
        if token_matches(token, self.bootstrap_token):
            return Principal(name=OPERATOR, scope=WRITE)
        if not token.startswith(PERSONAL_TOKEN_PREFIX):
            return None  # not a personal token's shape: no database round trip for junk
        return await run_in_threadpool(self._lookup, token)

    def _lookup(self, token: str) -> Principal | None:
        with get_sessionmaker(self.database_url)() as session:
            return principal_for(session, token)


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (scheme case-insensitive)."""
    if not header or not header[: len(BEARER)].lower() == BEARER:
        return None
    token = header[len(BEARER) :].strip()
    return token or None


def access_denied(conn: HTTPConnection, exc: AuthenticationError) -> Response:
    """401/403 as JSON like every other error of the API; 401 names the scheme it wants."""
    status_code = exc.status_code if isinstance(exc, AccessDenied) else 401
    headers = {"WWW-Authenticate": "Bearer"} if status_code == 401 else None
    return JSONResponse({"detail": str(exc)}, status_code=status_code, headers=headers)


def install_access_layer(
    app: Starlette, bootstrap_token: str, database_url: str, public_paths: frozenset[str]
) -> None:
    """Authenticate and authorise every request on its headers, before any route (see above)."""
    backend = TokenBackend(bootstrap_token, database_url, public_paths)
    app.add_middleware(AuthenticationMiddleware, backend=backend, on_error=access_denied)
    app.add_exception_handler(HTTPException, _http_error)


async def _http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's HTTP error body, except that a 413 says which limit applied and its value."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 413 and MAX_BODY_SIZE_SCOPE_KEY in request.scope:
        limit = request.scope[MAX_BODY_SIZE_SCOPE_KEY]
        detail = (
            f"request body larger than {limit} bytes "
            "(AIPO_MAX_REQUEST_BYTES; POST /uploads/pairs: AIPO_MAX_UPLOAD_BYTES)"
        )
        return JSONResponse({"detail": detail}, status_code=413)
    return await http_exception_handler(request, exc)
