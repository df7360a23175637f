"""/sweeps: a grid of child runs with a bound on how many run at once."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Response, status
from fastapi.exceptions import RequestValidationError

from aipo_core.config import RunConfig
from backend import lifecycle
from backend.api.common import ERRORS, not_found, runs_public
from backend.api.idempotency import KEY_RESPONSES, IdempotencyKeyDep, ScopeDep, check_replay
from backend.deps import LauncherDep, PrincipalDep, SessionDep, SettingsDep, require_token
from backend.preview import sweep_preview
from backend.schemas import MAX_INT32, SweepCreate, SweepPreviewPublic, SweepPublic
from backend.store import idempotency as idempotency_store
from backend.store import sweeps as store
from backend.store.models import Sweep
from backend.store.runs import count_active_runs
from backend.validation import input_key, policy_errors, prefixed_errors

router = APIRouter(prefix="/sweeps", tags=["sweeps"], dependencies=[Depends(require_token)], responses=ERRORS)
SweepId = Annotated[int, Path(ge=1, le=MAX_INT32, description="Sweep id.")]


def _children(
    body: SweepCreate, settings: SettingsDep
) -> tuple[RunConfig, list[tuple[dict[str, Any], RunConfig]]]:
    """The validated base config and (point, config) per child; 422 if the grid is too large, or
    the base or any grid point is invalid or refused. The grid's size is checked first, by
    arithmetic, before any work."""
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
    checked_inputs = {input_key(base)}
    for _, config in children:
        # The files and models a child names are read once per distinct set, not per grid point.
        fresh = input_key(config) not in checked_inputs
        errors += policy_errors(config, settings, ("body", "grid"), inputs=fresh)
        checked_inputs.add(input_key(config))
    if errors:
        raise RequestValidationError(errors)
    return base, children


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


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=SweepPublic,
    responses={200: {"model": SweepPublic, "description": "A replay of an earlier request with this key."}}
    | KEY_RESPONSES,
    summary="Create a sweep",
)
def create_sweep(
    body: SweepCreate,
    session: SessionDep,
    settings: SettingsDep,
    launcher: LauncherDep,
    principal: PrincipalDep,
    response: Response,
    key: IdempotencyKeyDep,
    scope: ScopeDep,
) -> SweepPublic:
    """One child run per grid point (cartesian product); the first `max_concurrent` are launched,
    the rest wait and start as children finish. 422 with nothing stored if any point is invalid.
    With an `Idempotency-Key`, a repeat of the same request within 24 h returns the sweep (200)."""
    base, _ = _children(body, settings)
    claim = None
    if key is not None:
        fingerprint = idempotency_store.request_hash(
            "POST /sweeps",
            {
                "name": body.name,
                "base_config": base.model_dump(mode="json"),
                "grid": body.grid,
                "max_concurrent": body.max_concurrent,
            },
        )
        claim = idempotency_store.claim_key(session, scope=scope, key=key, fingerprint=fingerprint)
        if isinstance(claim, idempotency_store.Replay):
            check_replay(key, claim, fingerprint, response)
            return get_sweep(claim.sweep_id or 0, session)
    sweep = store.create_sweep(
        session, body.name, base, body.grid, body.max_concurrent, created_by=principal.name
    )
    if claim is not None:
        claim.sweep_id = sweep.id
    session.commit()  # the sweep, its children and its key together
    lifecycle.launch_waiting_sweep_runs(session, sweep.id, launcher)
    if claim is not None:
        idempotency_store.purge_expired(session)
    session.refresh(sweep)
    return _public(session, sweep)


@router.post(
    "/preview", response_model=SweepPreviewPublic, summary="What a sweep would cost (creates nothing)"
)
def preview_sweep(body: SweepCreate, session: SessionDep, settings: SettingsDep) -> SweepPreviewPublic:
    """Number of child runs, one cost line per child and the totals. Validates exactly like
    `POST /sweeps` (same 422s, same cap on grid points) and stores nothing."""
    _, children = _children(body, settings)
    return sweep_preview(
        body.name,
        children,
        max_concurrent=body.max_concurrent,
        settings=settings,
        active_runs=count_active_runs(session),
    )


@router.get("/{sweep_id}", response_model=SweepPublic, summary="Get a sweep with its child runs")
def get_sweep(sweep_id: SweepId, session: SessionDep) -> SweepPublic:
    sweep = store.get_sweep(session, sweep_id)
    if sweep is None:
        raise not_found(f"sweep {sweep_id}")
    return _public(session, sweep)
