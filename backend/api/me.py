"""/me: who the bearer token belongs to and what it may do (the dashboard's sign-in check)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from backend.api.common import ERRORS
from backend.deps import PrincipalDep, require_token
from backend.schemas import PrincipalPublic

router = APIRouter(prefix="/me", tags=["auth"], dependencies=[Depends(require_token)], responses=ERRORS)


@router.get("", response_model=PrincipalPublic, summary="The caller's token: name and scope")
def whoami(principal: PrincipalDep) -> PrincipalPublic:
    return PrincipalPublic(name=principal.name, scope=principal.scope, operator=principal.is_operator)  # type: ignore[arg-type]
