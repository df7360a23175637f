"""Personal API tokens: create (returns the secret once), list, revoke, and look up by hash."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.auth import READ, WRITE, Principal, check_token_name, hash_token, new_personal_token
from backend.store.errors import ConflictError, NotFoundError
from backend.store.models import ApiToken, utcnow

# `last_used_at` is a hint for the operator, not an audit log: writing it on every request would
# turn each read into a write (and, on SQLite, take the database's one write lock).
LAST_USED_RESOLUTION = timedelta(minutes=1)


def create_token(session: Session, name: str, *, read_only: bool = False) -> tuple[ApiToken, str]:
    """Store a new token named `name`; returns (row, the token itself). COMMITS.

    ValueError for an invalid name; ConflictError if a live token already has this name.
    """
    check_token_name(name)
    secret = new_personal_token()
    row = ApiToken(name=name, token_hash=hash_token(secret), scope=READ if read_only else WRITE)
    session.add(row)
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise ConflictError(f"a token named {name!r} already exists; revoke it first") from exc
    return row, secret


def list_tokens(session: Session, *, include_revoked: bool = False) -> list[ApiToken]:
    query = select(ApiToken).order_by(ApiToken.id)
    if not include_revoked:
        query = query.where(ApiToken.revoked_at.is_(None))
    return list(session.scalars(query).all())


def revoke_token(session: Session, name_or_id: str) -> ApiToken:
    """Revoke the live token with this name (or this numeric id). COMMITS. NotFoundError if none."""
    query = select(ApiToken).where(ApiToken.revoked_at.is_(None))
    if name_or_id.isdigit():
        query = query.where(ApiToken.id == int(name_or_id))
    else:
        query = query.where(ApiToken.name == name_or_id)
    row = session.scalars(query).first()
    if row is None:
        raise NotFoundError(f"no live token named or numbered {name_or_id!r}")
    row.revoked_at = utcnow()
    session.commit()
    return row


def principal_for(session: Session, token: str) -> Principal | None:
    """The live token matching `token`, as a Principal (None if unknown or revoked). May COMMIT
    a `last_used_at` stamp (at most once a minute per token)."""
    row = session.scalars(
        select(ApiToken).where(ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None))
    ).first()
    if row is None:
        return None
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
        session.execute(update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now))
        session.commit()
    return Principal(name=row.name, scope=row.scope, token_id=row.id)
