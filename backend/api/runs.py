"""/runs: create (validate + store + launch), list, get, cancel, resume, clone."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from aipo_core.config import RunConfig, with_overrides
from backend.api.common import CONFLICT, ERRORS, RunId, conflict, load_run, run_public, runs_public
from backend.deps import LauncherDep, PrincipalDep, SessionDep, SettingsDep, require_token
from backend.schemas import RunClone, RunCreate, RunList, RunPublic, RunStatus, SafeStr
from backend.store import runs as store
from backend.store.errors import ConflictError
from backend.validation import check_config, prefixed_errors

router = APIRouter(prefix="/runs", tags=["runs"], dependencies=[Depends(require_token)], responses=ERRORS)


def _as_run_config(body: RunConfig) -> RunConfig:
    """The request model is a RunConfig subclass; store the plain RunConfig (same fields set)."""
    return RunConfig.model_validate(body.model_dump(exclude_unset=True))


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=RunPublic, summary="Create and launch a run"
)
def create_run(
    body: RunCreate,
    session: SessionDep,
    settings: SettingsDep,
    launcher: LauncherDep,
    principal: PrincipalDep,
) -> RunPublic:
    """Validate the config, store the run with its planned stages, and enqueue the first stage.

    422 (with field paths) on an invalid or refused config; nothing is stored then.
    """
    config = _as_run_config(body)
    check_config(config, settings)
    run = store.create_run(session, config, created_by=principal.name)
    store.launch_run(session, run.id, launcher)
    return run_public(session, run)


@router.get("", response_model=RunList, summary="List runs")
def list_runs(
    session: SessionDep,
    status_: Annotated[RunStatus | None, Query(alias="status")] = None,
    objective: Annotated[SafeStr | None, Query(max_length=64)] = None,
    name: Annotated[SafeStr | None, Query(max_length=200, description="Case-insensitive substring.")] = None,
    sweep_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    created_by: Annotated[SafeStr | None, Query(max_length=64, description="Token name (exact).")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> RunList:
    """Newest first."""
    runs, total = store.list_runs(
        session,
        status=status_,
        objective=objective,
        name=name,
        sweep_id=sweep_id,
        created_by=created_by,
        limit=limit,
        offset=offset,
    )
    return RunList(items=runs_public(session, runs), total=total, limit=limit, offset=offset)


@router.get("/{run_id}", response_model=RunPublic, summary="Get a run")
def get_run(run_id: RunId, session: SessionDep) -> RunPublic:
    return run_public(session, load_run(session, run_id))


@router.post("/{run_id}/cancel", response_model=RunPublic, responses=CONFLICT, summary="Cancel a run")
def cancel_run(run_id: RunId, session: SessionDep, launcher: LauncherDep) -> RunPublic:
    """Mark the run and its unfinished stages cancelled; the worker stops the running stage.

    Idempotent for cancelled runs; 409 for succeeded or failed runs.
    """
    load_run(session, run_id)
    try:
        run = store.cancel_run(session, run_id, launcher)
    except ConflictError as exc:
        raise conflict(str(exc)) from exc
    return run_public(session, run)


@router.post("/{run_id}/resume", response_model=RunPublic, responses=CONFLICT, summary="Resume a run")
def resume_run(run_id: RunId, session: SessionDep, launcher: LauncherDep) -> RunPublic:
    """Continue a failed or cancelled run from its first stage that did not succeed (409 otherwise)."""
    load_run(session, run_id)
    try:
        run = store.resume_run(session, run_id, launcher)
    except ConflictError as exc:
        raise conflict(str(exc)) from exc
    return run_public(session, run)


@router.post(
    "/{run_id}/clone", status_code=status.HTTP_201_CREATED, response_model=RunPublic, summary="Clone a run"
)
def clone_run(
    run_id: RunId,
    body: RunClone,
    session: SessionDep,
    settings: SettingsDep,
    launcher: LauncherDep,
    principal: PrincipalDep,
) -> RunPublic:
    """A new run from this run's config with dotted-path overrides (e.g. `objective.alpha`), launched."""
    parent = load_run(session, run_id)
    overrides = {"name": f"{parent.name} (clone)"[:200], **body.overrides}
    try:
        config = with_overrides(parent.run_config(), overrides)
    except ValidationError as exc:
        raise RequestValidationError(prefixed_errors(exc.errors(), ("body", "overrides"))) from exc
    except ValueError as exc:
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("body", "overrides"), "msg": str(exc), "input": None}]
        ) from exc
    check_config(config, settings)
    run = store.create_run(session, config, parent_run_id=parent.id, created_by=principal.name)
    store.launch_run(session, run.id, launcher)
    return run_public(session, run)
