"""FastAPI dependencies: settings, database session, auth, launcher (each swappable in tests)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from backend.auth import AccessDenied, Principal, authorize
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

_bearer = HTTPBearer(
    auto_error=False,
    description="A personal token (`aipo token create NAME`), or the operator's AIPO_API_TOKEN "
    "(default: the contents of $AIPO_HOME/token)",
)


def current_principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    """The caller the access layer authenticated (backend/access.py), before the body was read.

    401 if there is none, and the scope rule again, so a route can never be reached by a token
    that lacks its rights even if the app were assembled without the access layer. `credentials`
    is only declared so the OpenAPI schema shows the bearer scheme.
    """
    user = request.scope.get("user")
    if not isinstance(user, Principal):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="missing or invalid bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    try:
        authorize(user, request.method)
    except AccessDenied as exc:
        raise HTTPException(status_code=exc.status_code, detail=exc.detail) from exc
    return user


require_token = current_principal  # the routers' `dependencies=[Depends(require_token)]`
PrincipalDep = Annotated[Principal, Depends(current_principal)]


def get_launcher(request: Request) -> Launcher:
    """The app's launcher: Celery by default, created on first use. Override in tests."""
    state = request.app.state
    if getattr(state, "launcher", None) is None:
        state.launcher = CeleryLauncher(state.settings)
    return state.launcher


LauncherDep = Annotated[Launcher, Depends(get_launcher)]
