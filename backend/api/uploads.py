"""/uploads/pairs: a preference JSONL file streamed to the server's data folder for `initial_pairs`.

The body is never held in memory: it is copied chunk by chunk into a private temporary file in
`settings.uploads_dir` (the first allowed data root's `uploads/`), validated there with the same
reader the pipeline uses (`aipo_core.data.preferences`), and renamed into place only if every
row is valid; a refused or interrupted upload leaves nothing behind. Its size limit is
AIPO_MAX_UPLOAD_BYTES (the app installs it on this router), not the API's 1 MiB default.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Request, status
from starlette.concurrency import run_in_threadpool

from aipo_core.data.preferences import iter_preference_pairs
from backend.api.common import ERRORS
from backend.deps import SettingsDep, require_token
from backend.home import ensure_private_dir
from backend.schemas import ErrorPublic, PairUploadPublic

router = APIRouter(
    prefix="/uploads", tags=["uploads"], dependencies=[Depends(require_token)], responses=ERRORS
)

UPLOAD_RESPONSES: dict[int | str, dict] = {
    403: {"model": ErrorPublic, "description": "The token is read-only."},
    413: {"model": ErrorPublic, "description": "Larger than AIPO_MAX_UPLOAD_BYTES."},
    422: {"description": "Not a valid preference file; `detail[0].msg` names the line and field."},
}
JSONL_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-ndjson": {
                "schema": {"type": "string", "format": "binary"},
                "example": '{"prompt": "Name a prime.", "chosen": "7", "rejected": "8"}\n',
            }
        },
    }
}


@router.post(
    "/pairs",
    status_code=status.HTTP_201_CREATED,
    response_model=PairUploadPublic,
    responses=UPLOAD_RESPONSES,
    openapi_extra=JSONL_BODY,
    summary="Upload a preference JSONL file (for a config's initial_pairs)",
)
async def upload_pairs(request: Request, settings: SettingsDep) -> PairUploadPublic:
    """The raw body is TRL preference JSONL (prompt/chosen/rejected per line). Returns the stored
    file's `path`; 422 naming line and field if any row is invalid (nothing is kept then)."""
    folder = settings.uploads_dir
    ensure_private_dir(folder)
    fd, tmp_name = tempfile.mkstemp(prefix=".upload-", suffix=".jsonl.part", dir=folder)
    tmp = Path(tmp_name)
    try:
        size = 0
        with os.fdopen(fd, "wb") as fh:
            async for chunk in request.stream():  # counted against the route's limit as it arrives
                size += len(chunk)
                fh.write(chunk)
        if size == 0:
            raise _invalid("the body is empty; send the JSONL file's bytes")
        try:
            pairs = await run_in_threadpool(_count_valid_pairs, tmp)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _invalid(str(exc).replace(f"{tmp}:", "line ").replace(str(tmp), "the upload")) from None
        final = folder / f"pairs-{secrets.token_hex(8)}.jsonl"
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return PairUploadPublic(path=str(final), pairs=pairs, bytes=size)


def _count_valid_pairs(path: Path) -> int:
    """Rows of the file, each validated like the pipeline will read it (ValueError otherwise)."""
    return sum(1 for _ in iter_preference_pairs(path))


def _invalid(message: str) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        detail=[{"type": "value_error", "loc": ["body"], "msg": message, "input": None}],
    )
