"""Idempotency keys: a retried or doubled create request returns what the first one created.

`claim_key` runs first in the create transaction: it inserts the (scope, key) row, the caller
then creates the run or sweep, records its id on the row and commits both at once. Of two
requests racing with one key, the unique constraint admits one insert; the other waits for that
transaction (PostgreSQL blocks on the unique index; SQLite's BEGIN IMMEDIATE serialises writers),
fails, rolls back and reads the winner's committed row. A row is only ever visible together with
the run or sweep it names.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.store.errors import ConflictError
from backend.store.models import IdempotencyKey, utcnow

log = logging.getLogger(__name__)

KEY_TTL = timedelta(hours=24)
# A claim is retried when the row it lost to disappears before it is read (expired and purged).
MAX_CLAIM_ATTEMPTS = 3


@dataclass(frozen=True)
class Replay:
    """The committed request that holds a key: its fingerprint and what it created."""

    request_hash: str
    run_id: int | None
    sweep_id: int | None


def request_hash(route: str, payload: Any) -> str:
    """SHA-256 of the route and the validated request as sorted-keys JSON: equal for equal requests
    however their JSON was spelled (key order, defaults written out or left to the server)."""
    canonical = json.dumps(
        {"route": route, "body": payload}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _same_key(scope: str, key: str) -> Any:
    return and_(IdempotencyKey.scope == scope, IdempotencyKey.key == key)


def claim_key(session: Session, *, scope: str, key: str, fingerprint: str) -> IdempotencyKey | Replay:
    """Reserve `key` in the caller's (new) transaction, or return the request already holding it.

    On a reservation the flushed row is returned; set its `run_id`/`sweep_id` and commit it with
    what it created (rolling back releases the key). An expired row for the key is replaced.
    """
    for _ in range(MAX_CLAIM_ATTEMPTS):
        cutoff = utcnow() - KEY_TTL
        expired = delete(IdempotencyKey).where(_same_key(scope, key), IdempotencyKey.created_at < cutoff)
        session.execute(expired)
        row = IdempotencyKey(scope=scope, key=key, request_hash=fingerprint, created_at=utcnow())
        session.add(row)
        try:
            session.flush()
            return row
        except IntegrityError:
            session.rollback()  # another request holds the key and has committed
        held = session.scalars(
            select(IdempotencyKey).where(_same_key(scope, key), IdempotencyKey.created_at >= cutoff)
        ).first()
        if held is not None:
            return Replay(held.request_hash, held.run_id, held.sweep_id)
        session.rollback()
    raise ConflictError(f"Idempotency-Key {key!r} is changing hands; retry the request")


def purge_expired(session: Session, now: datetime | None = None) -> int:
    """Delete every key older than KEY_TTL and COMMIT; returns how many (lazy cleanup, best effort)."""
    cutoff = (now or utcnow()) - KEY_TTL
    try:
        deleted = session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < cutoff)).rowcount
        session.commit()
    except Exception as exc:  # cleanup must never fail the request that triggered it
        session.rollback()
        log.warning("purging expired idempotency keys failed: %s", exc)
        return 0
    return int(deleted or 0)
