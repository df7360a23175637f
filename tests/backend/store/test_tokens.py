"""Personal tokens in the store: only a hash is kept, names are unique among live tokens."""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from backend.auth import Principal
from backend.store import tokens
from backend.store.errors import ConflictError, NotFoundError
from backend.store.models import ApiToken


def name() -> str:
    return f"u-{uuid.uuid4().hex[:8]}"


def test_only_the_sha256_is_stored(session) -> None:
    who = name()
    row, secret = tokens.create_token(session, who, read_only=True)
    stored = session.scalars(select(ApiToken).where(ApiToken.id == row.id)).one()
    assert stored.token_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in {str(v) for v in vars(stored).values()}
    assert (stored.scope, stored.revoked_at, stored.last_used_at) == ("read", None, None)
    assert tokens.principal_for(session, secret) == Principal(name=who, scope="read", token_id=row.id)
    assert tokens.principal_for(session, secret + "x") is None


def test_names_are_unique_among_live_tokens_and_revoking_frees_them(session) -> None:
    who = name()
    first, old_secret = tokens.create_token(session, who)
    with pytest.raises(ConflictError):
        tokens.create_token(session, who)
    assert tokens.revoke_token(session, who).id == first.id
    assert tokens.principal_for(session, old_secret) is None
    second, new_secret = tokens.create_token(session, who)
    assert tokens.principal_for(session, new_secret).token_id == second.id  # type: ignore[union-attr]
    with pytest.raises(NotFoundError):
        tokens.revoke_token(session, str(first.id))  # already revoked
    listed = {t.id for t in tokens.list_tokens(session)}
    assert second.id in listed and first.id not in listed
    assert first.id in {t.id for t in tokens.list_tokens(session, include_revoked=True)}


def test_last_used_is_stamped_at_most_once_a_minute(session) -> None:
    row, secret = tokens.create_token(session, name())
    tokens.principal_for(session, secret)
    first = session.get(ApiToken, row.id, populate_existing=True).last_used_at
    assert first is not None
    tokens.principal_for(session, secret)
    assert session.get(ApiToken, row.id, populate_existing=True).last_used_at == first
    earlier = first - timedelta(minutes=2)
    session.execute(update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=earlier))
    session.commit()
    tokens.principal_for(session, secret)
    assert session.get(ApiToken, row.id, populate_existing=True).last_used_at > earlier
