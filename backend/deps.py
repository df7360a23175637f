"""FastAPI dependencies: settings, database session, auth, launcher (each swappable in tests)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from backend.auth import token_matches
from backend.db import get_sessionmaker
from backend.launcher import CeleryLauncher, Launcher
from backend.settings import Settings


def app_settings(request: Request) -> Settings:
    """The settings the app was built with (`create_app(settings)`)."""
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(app_settings)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    """One session per request; routes commit, anything uncommitted is rolled back on close."""
    with get_sessionmaker(settings.resolved_database_url)() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]

_bearer = HTTPBearer(auto_error=False, description="AIPO_API_TOKEN, or the contents of $AIPO_HOME/token")


def require_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """401 unless `Authorization: Bearer <token>` carries the server's token."""
    expected: str = request.app.state.api_token
    if credentials is None or not token_matches(credentials.credentials, expected):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="missing or invalid bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )


AuthDep = Annotated[None, Depends(require_token)]


def get_launcher(request: Request) -> Launcher:
    """The app's launcher: Celery by default, created on first use. Override in tests."""
    state = request.app.state
    if getattr(state, "launcher", None) is None:
        state.launcher = CeleryLauncher(state.settings)
    return state.launcher


LauncherDep = Annotated[Launcher, Depends(get_launcher)]
