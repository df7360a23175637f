"""/sweeps: a grid of child runs with a bound on how many run at once."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, status
from fastapi.exceptions import RequestValidationError

from aipo_core.config import RunConfig
from backend.api.common import ERRORS, not_found, runs_public
from backend.deps import LauncherDep, PrincipalDep, SessionDep, SettingsDep, require_token
from backend.schemas import MAX_INT32, SweepCreate, SweepPublic
from backend.store import sweeps as store
from backend.store.models import Sweep
from backend.validation import policy_errors, prefixed_errors

router = APIRouter(prefix="/sweeps", tags=["sweeps"], dependencies=[Depends(require_token)], responses=ERRORS)
SweepId = Annotated[int, Path(ge=1, le=MAX_INT32, description="Sweep id.")]


def _children(body: SweepCreate, settings: SettingsDep) -> RunConfig:
    """The validated base config; 422 if the grid is too large, or the base or any grid point is
    invalid or refused. The grid's size is checked first, by arithmetic, before any work."""
    try:
        store.grid_size(body.grid)
    except ValueError as exc:
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("body", "grid"), "msg": str(exc), "input": None}]
        ) from exc
    base = RunConfig.model_validate(body.base_config.model_dump(exclude_unset=True))
    errors = policy_errors(base, settings, ("body", "base_config"))
    try:
        children = store.child_configs(base, body.grid)
    except store.GridPointError as exc:
        label = ",".join(exc.point)
        raise RequestValidationError(prefixed_errors(exc.errors, ("body", "grid", label))) from exc
    except ValueError as exc:
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("body", "grid"), "msg": str(exc), "input": None}]
        ) from exc
    for _, config in children:
        errors += policy_errors(config, settings, ("body", "grid"))
    if errors:
        raise RequestValidationError(errors)
    return base


def _public(session: SessionDep, sweep: Sweep) -> SweepPublic:
    return SweepPublic(
        id=sweep.id,
        name=sweep.name,
        base_config=sweep.base_config,
        grid=sweep.grid,
        max_concurrent=sweep.max_concurrent,
        created_at=sweep.created_at,
        created_by=sweep.created_by,
        status_counts=store.sweep_status_counts(session, sweep.id),
        runs=runs_public(session, list(sweep.runs)),
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=SweepPublic, summary="Create a sweep")
def create_sweep(
    body: SweepCreate,
    session: SessionDep,
    settings: SettingsDep,
    launcher: LauncherDep,
    principal: PrincipalDep,
) -> SweepPublic:
    """One child run per grid point (cartesian product); the first `max_concurrent` are launched,
    the rest wait and start as children finish. 422 with nothing stored if any point is invalid."""
    base = _children(body, settings)
    sweep = store.create_sweep(
        session, body.name, base, body.grid, body.max_concurrent, created_by=principal.name
    )
    session.commit()
    store.launch_waiting_sweep_runs(session, sweep.id, launcher)
    session.refresh(sweep)
    return _public(session, sweep)


@router.get("/{sweep_id}", response_model=SweepPublic, summary="Get a sweep with its child runs")
def get_sweep(sweep_id: SweepId, session: SessionDep) -> SweepPublic:
    sweep = store.get_sweep(session, sweep_id)
    if sweep is None:
        raise not_found(f"sweep {sweep_id}")
    return _public(session, sweep)
