"""/runs: create (validate + store + launch, idempotent with a key), preview, list, get, cancel,
resume, clone."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy.orm import Session

from aipo_core.config import RunConfig, with_overrides
from backend import lifecycle
from backend.api.common import CONFLICT, ERRORS, RunId, conflict, load_run, run_public, runs_public
from backend.api.idempotency import KEY_RESPONSES, IdempotencyKeyDep, ScopeDep, check_replay
from backend.deps import LauncherDep, PrincipalDep, SessionDep, SettingsDep, require_token
from backend.launcher import Launcher
from backend.preview import run_preview
from backend.schemas import RunClone, RunCreate, RunList, RunPreviewPublic, RunPublic, RunStatus, SafeStr
from backend.store import idempotency as idempotency_store
from backend.store import runs as store
from backend.store.errors import ConflictError
from backend.validation import check_config, prefixed_errors

router = APIRouter(prefix="/runs", tags=["runs"], dependencies=[Depends(require_token)], responses=ERRORS)


def _as_run_config(body: RunConfig) -> RunConfig:
    """The request model is a RunConfig subclass; store the plain RunConfig (same fields set)."""
    return RunConfig.model_validate(body.model_dump(exclude_unset=True))


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=RunPublic,
    responses={200: {"model": RunPublic, "description": "A replay of an earlier request with this key."}}
    | KEY_RESPONSES,
    summary="Create and launch a run",
)
def create_run(
    body: RunCreate,
    session: SessionDep,
    settings: SettingsDep,
    launcher: LauncherDep,
    principal: PrincipalDep,
    response: Response,
    key: IdempotencyKeyDep,
    scope: ScopeDep,
) -> RunPublic:
    """Validate the config, store the run with its planned stages, and enqueue the first stage.

    422 (with field paths) on an invalid or refused config; nothing is stored then. With an
    `Idempotency-Key`, a repeat of the same request within 24 h returns the run it created (200).
    """
    config = _as_run_config(body)
    check_config(config, settings)
    fingerprint = idempotency_store.request_hash("POST /runs", config.model_dump(mode="json"))
    return _create_and_launch(
        session,
        config,
        launcher,
        key=key,
        scope=scope,
        fingerprint=fingerprint,
        response=response,
        created_by=principal.name,
    )


def _create_and_launch(
    session: Session,
    config: RunConfig,
    launcher: Launcher,
    *,
    key: str | None,
    scope: str,
    fingerprint: str,
    response: Response,
    created_by: str,
    parent_run_id: int | None = None,
) -> RunPublic:
    """Store `config` as a new run and launch it; with an Idempotency-Key, a request whose
    `fingerprint` already holds the key within 24 h gets the run it created instead (200), and
    one with another fingerprint a 409."""
    claim = None
    if key is not None:
        claim = idempotency_store.claim_key(session, scope=scope, key=key, fingerprint=fingerprint)
        if isinstance(claim, idempotency_store.Replay):
            check_replay(key, claim, fingerprint, response)
            return run_public(session, load_run(session, claim.run_id or 0))
    run = store.create_run(session, config, parent_run_id=parent_run_id, created_by=created_by)
    if claim is not None:
        claim.run_id = run.id
    lifecycle.launch_run(session, run.id, launcher)  # commits the run and its key together
    if claim is not None:
        idempotency_store.purge_expired(session)
    return run_public(session, run)


@router.post("/preview", response_model=RunPreviewPublic, summary="What a run would cost (creates nothing)")
def preview_run(body: RunCreate, session: SessionDep, settings: SettingsDep) -> RunPreviewPublic:
    """The launch summary of a config: samples, token bounds, judge passes, model size, stages and
    queues. Validates exactly like `POST /runs` (same 422s) and stores nothing."""
    config = _as_run_config(body)
    check_config(config, settings)
    return run_preview(config, settings, active_runs=store.count_active_runs(session))


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
    return RunList(
        items=runs_public(session, runs),
        total=total,
        limit=limit,
        offset=offset,
        active=store.count_active_runs(session),
    )


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
        run = lifecycle.cancel_run(session, run_id, launcher)
    except ConflictError as exc:
        raise conflict(str(exc)) from exc
    return run_public(session, run)


@router.post("/{run_id}/resume", response_model=RunPublic, responses=CONFLICT, summary="Resume a run")
def resume_run(run_id: RunId, session: SessionDep, launcher: LauncherDep) -> RunPublic:
    """Continue a failed or cancelled run from its first stage that did not succeed (409 otherwise)."""
    load_run(session, run_id)
    try:
        run = lifecycle.resume_run(session, run_id, launcher)
    except ConflictError as exc:
        raise conflict(str(exc)) from exc
    return run_public(session, run)


@router.post(
    "/{run_id}/clone",
    status_code=status.HTTP_201_CREATED,
    response_model=RunPublic,
    responses={200: {"model": RunPublic, "description": "A replay of an earlier request with this key."}}
    | KEY_RESPONSES,
    summary="Clone a run",
)
def clone_run(
    run_id: RunId,
    body: RunClone,
    session: SessionDep,
    settings: SettingsDep,
    launcher: LauncherDep,
    principal: PrincipalDep,
    response: Response,
    key: IdempotencyKeyDep,
    scope: ScopeDep,
) -> RunPublic:
    """A new run from this run's config with dotted-path overrides (e.g. `objective.alpha`), launched.

    With an `Idempotency-Key`, a repeat (same source run, overrides giving the same config) within
    24 h returns the clone it created (200); the key with anything else is a 409.
    """
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
    fingerprint = idempotency_store.request_hash(
        "POST /runs/{id}/clone", {"run_id": parent.id, "config": config.model_dump(mode="json")}
    )
    return _create_and_launch(
        session,
        config,
        launcher,
        key=key,
        scope=scope,
        fingerprint=fingerprint,
        response=response,
        created_by=principal.name,
        parent_run_id=parent.id,
    )
