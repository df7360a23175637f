"""The FastAPI application: `uvicorn backend.app:create_app --factory`.

Embedded mode (SQLite) applies migrations on start so `aipo up` works on a fresh machine;
services mode expects `aipo db upgrade` to have been run (AIPO_AUTO_MIGRATE overrides both).
The API token is resolved at start (creating `$AIPO_HOME/token` if needed) so every request
compares against one value.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from sqlalchemy import text

from backend.api import metrics, objectives, pairs, progress, runs, sweeps, workers
from backend.auth import resolve_api_token
from backend.db import get_engine
from backend.deps import SettingsDep
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
    )
    app.state.settings = settings
    app.state.api_token = resolve_api_token(settings.api_token, settings.home)
    app.state.launcher = None
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    health = _health_router()
    app.include_router(health)
    app.include_router(health, prefix=API_PREFIX)
    for module in (runs, sweeps, progress, metrics, pairs, objectives, workers):
        app.include_router(module.router, prefix=API_PREFIX)
    return app
