"""The `Idempotency-Key` header of POST /runs, /runs/{id}/clone and /sweeps: parsing, scope and
replies.

Same key + same request within 24 h → 200 with what the first request created (and the header
`Idempotent-Replayed: true`); same key + another request → 409 naming the key. The value may be
sent bare (`abc-123`) or as a structured-field string (`"abc-123"`, as in the IETF draft).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, Response, status

from backend.deps import PrincipalDep
from backend.schemas import ErrorPublic
from backend.store.idempotency import Replay

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
KEY_CHARS = r"[A-Za-z0-9._:+/=~-]{1,255}"

KEY_RESPONSES: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorPublic, "description": f"The {HEADER} was already used with a different request."}
}


def idempotency_key(
    value: Annotated[
        str | None,
        Header(
            alias=HEADER,
            pattern=rf'^(?:{KEY_CHARS}|"{KEY_CHARS}")$',
            description=(
                "Any unique string (a UUID is best), 1–255 of A–Z a–z 0–9 . _ : + / = ~ -. Resending the "
                "same request with the same key within 24 h returns the first result (200) instead of "
                "creating another; a different request with the key is a 409."
            ),
            examples=["5f0c6f0e-8a3b-4c7e-9a51-2d4f1c3b9e77"],
        ),
    ] = None,
) -> str | None:
    """The key without structured-field quotes; None when the header is absent (422 if malformed)."""
    if value is None:
        return None
    return value[1:-1] if value.startswith('"') else value


def idempotency_scope(principal: PrincipalDep) -> str:
    """Whose keys these are: two tokens may use the same key independently (keys are scoped by
    the token's name; the bootstrap token's name is "operator")."""
    return principal.name


IdempotencyKeyDep = Annotated[str | None, Depends(idempotency_key)]
ScopeDep = Annotated[str, Depends(idempotency_scope)]


def check_replay(key: str, replay: Replay, fingerprint: str, response: Response) -> None:
    """409 if the key was used for another request; otherwise mark the response as a replay (200)."""
    if replay.request_hash != fingerprint:
        raise HTTPException(
            status_code=status.HTTP_409_CONFLICT,
            detail=(
                f"{HEADER} {key!r} was already used within the last 24 h for a different request; "
                "send a new key for a new submission"
            ),
        )
    response.status_code = status.HTTP_200_OK
    response.headers[REPLAYED_HEADER] = "true"
