"""`api_client.clone_run` against the real backend (seeded SQLite, a recording launcher): one
Idempotency-Key per click-intent makes a repeated click return the first clone."""

from __future__ import annotations

import uuid

import pytest

from dashboard import api_client
from tests.backend.conftest import run_config
from tests.dashboard.seeded_backend import SeededApi


def test_clone_with_a_key_is_created_once(backend: SeededApi) -> None:
    parent = api_client.create_run(run_config())
    key = uuid.uuid4().hex
    first = api_client.clone_run(parent["id"], {"objective.alpha": 0.03}, idempotency_key=key)
    again = api_client.clone_run(parent["id"], {"objective.alpha": 0.03}, idempotency_key=key)
    assert (first["replayed"], again["replayed"]) == (False, True)
    assert again["id"] == first["id"] and first["parent_run_id"] == parent["id"]
    assert len(backend.launcher.sent) == 2  # the parent's first stage and the clone's, nothing more
    other = api_client.clone_run(parent["id"], {"objective.alpha": 0.03})  # no key: a new clone
    assert other["id"] not in (parent["id"], first["id"]) and not other["replayed"]
    with pytest.raises(api_client.ApiError, match="HTTP 409") as info:
        api_client.clone_run(parent["id"], {"objective.alpha": 0.07}, idempotency_key=key)
    assert info.value.status == 409
