"""The FastAPI application: `uvicorn backend.app:create_app --factory`.

Embedded mode (SQLite) applies migrations on start so `aipo up` works on a fresh machine;
services mode expects `aipo db upgrade` to have been run (AIPO_AUTO_MIGRATE overrides both).
The bootstrap token is resolved at start (creating `$AIPO_HOME/token` if needed); the access
layer (backend/access.py) authenticates every request on its headers before a body is read;
then bodies above AIPO_MAX_REQUEST_BYTES are refused with 413. The interactive docs are public
only in embedded mode; elsewhere /docs and /redoc are off and /openapi.json needs a token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from sqlalchemy import text

from backend.access import DOCS_PATHS, HEALTH_PATHS, install_access_layer
from backend.api import lineage, me, metrics, objectives, pairs, progress, runs, sweeps, uploads, workers
from backend.auth import resolve_api_token
from backend.db import get_engine
from backend.deps import SettingsDep
from backend.home import secure_tree
from backend.migrate import upgrade
from backend.schemas import HealthPublic
from backend.settings import Settings, get_settings

API_PREFIX = "/api/v1"


def _health_router() -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/health", response_model=HealthPublic, summary="Liveness and database check (no auth)")
    def health(settings: SettingsDep) -> HealthPublic:
        try:
            with get_engine(settings.resolved_database_url).connect() as connection:
                connection.execute(text("SELECT 1"))
            database = "ok"
        except Exception:  # health must answer even when the database does not
            database = "unreachable"
        return HealthPublic(status="ok", database=database)  # type: ignore[arg-type]

    return router


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app for `settings` (default: from the environment)."""
    settings = settings or get_settings()
    secure_tree(settings.home)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.should_auto_migrate:
            upgrade(settings.resolved_database_url)
        yield

    app = FastAPI(
        title="AIPO Lab API",
        version="1.0.0",
        summary="Launch and inspect iterative preference-optimisation runs.",
        lifespan=lifespan,
        docs_url="/docs" if settings.serves_public_docs else None,
        redoc_url="/redoc" if settings.serves_public_docs else None,
    )
    app.state.settings = settings
    settings.ensure_data_root()
    app.state.launcher = None
    install_access_layer(
        app,
        bootstrap_token=resolve_api_token(settings.api_token, settings.home),
        database_url=settings.resolved_database_url,
        public_paths=HEALTH_PATHS | (DOCS_PATHS if settings.serves_public_docs else frozenset()),
    )
    # Added after the access layer, so it wraps it: preflights are answered, refusals get CORS headers.
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    # Body limits per router, not app-wide: an app-wide limit sits outside the access layer and would
    # answer an oversized unauthenticated request with 413 instead of 401.
    limit = settings.max_request_bytes
    health = _health_router()
    app.include_router(health, max_body_size=limit)
    app.include_router(health, prefix=API_PREFIX, max_body_size=limit)
    for module in (runs, sweeps, progress, metrics, pairs, objectives, me, workers, lineage):
        app.include_router(module.router, prefix=API_PREFIX, max_body_size=limit)
    app.include_router(uploads.router, prefix=API_PREFIX, max_body_size=settings.max_upload_bytes)
    return app
