"""/objectives: the objective registry as data, so clients never keep their own copy of it."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from aipo_core.objectives import OBJECTIVES
from backend.api.common import ERRORS
from backend.deps import require_token
from backend.schemas import ObjectivePublic

router = APIRouter(
    prefix="/objectives", tags=["objectives"], dependencies=[Depends(require_token)], responses=ERRORS
)


@router.get("", response_model=list[ObjectivePublic], summary="Registered objectives and their defaults")
def list_objectives() -> list[ObjectivePublic]:
    return [
        ObjectivePublic(
            name=spec.name,
            hyperparameters=list(spec.hyperparameters),
            defaults=dict(spec.defaults),
            citation=spec.citation,
            loss_formula=spec.loss_formula,
            reward_formula=spec.reward_formula,
            gradient_weight_formula=spec.weight_formula,
            gradient_weight_range=list(spec.weight_range) if spec.weight_range else None,
            scales_reference=spec.scales_reference,
        )
        for spec in OBJECTIVES.values()
    ]
