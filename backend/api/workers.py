"""/workers: which workers exist, what they consume, which GPUs they have, what they are running."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from backend.api.common import ERRORS
from backend.deps import SessionDep, SettingsDep, require_token
from backend.schemas import WorkerList, WorkerPublic, WorkerStagePublic
from backend.store.workers import is_alive, list_workers

router = APIRouter(
    prefix="/workers", tags=["workers"], dependencies=[Depends(require_token)], responses=ERRORS
)


@router.get("", response_model=WorkerList, summary="Registered workers: queues, host, GPUs, current stage")
def get_workers(session: SessionDep, settings: SettingsDep) -> WorkerList:
    timeout = settings.stage_heartbeat_timeout_s
    return WorkerList(
        items=[
            WorkerPublic(
                name=w.name,
                host=w.host,
                pid=w.pid,
                queues=w.queues,
                gpus=w.gpus,
                gpu_count=len(w.gpus),
                stage=WorkerStagePublic.model_validate(w.stage) if w.stage is not None else None,
                started_at=w.started_at,
                heartbeat_at=w.heartbeat_at,
                alive=is_alive(w, timeout_s=timeout),
            )
            for w in list_workers(session)
        ]
    )
