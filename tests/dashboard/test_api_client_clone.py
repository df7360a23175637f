"""`api_client.clone_run` against the real backend (SQLite, a recording launcher): one
Idempotency-Key per click-intent makes a repeated click return the first clone."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.app import create_app
from backend.db import dispose_engines
from backend.deps import get_launcher
from backend.migrate import upgrade
from dashboard import api_client
from tests.backend.conftest import TOKEN, RecordingLauncher, make_settings, run_config, serve


@pytest.fixture
def backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordingLauncher]:
    database_url = f"sqlite:///{tmp_path / 'aipo.db'}"
    upgrade(database_url)
    app = create_app(make_settings(tmp_path, database_url))
    launcher = RecordingLauncher()
    app.dependency_overrides[get_launcher] = lambda: launcher
    with serve(app) as url:
        monkeypatch.setenv("AIPO_API_URL", url)
        monkeypatch.setenv("AIPO_DASHBOARD_AUTH", "server-token")
        monkeypatch.setenv("AIPO_API_TOKEN", TOKEN)
        monkeypatch.setenv("AIPO_HOME", str(tmp_path))
        api_client.clear_cache()
        yield launcher
    api_client.clear_cache()
    dispose_engines()


def test_clone_with_a_key_is_created_once(backend: RecordingLauncher) -> None:
    parent = api_client.create_run(run_config())
    key = uuid.uuid4().hex
    first = api_client.clone_run(parent["id"], {"objective.alpha": 0.03}, idempotency_key=key)
    again = api_client.clone_run(parent["id"], {"objective.alpha": 0.03}, idempotency_key=key)
    assert (first["replayed"], again["replayed"]) == (False, True)
    assert again["id"] == first["id"] and first["parent_run_id"] == parent["id"]
    assert len(backend.sent) == 2  # the parent's first stage and the clone's, nothing more
    other = api_client.clone_run(parent["id"], {"objective.alpha": 0.03})  # no key: a new clone
    assert other["id"] not in (parent["id"], first["id"]) and not other["replayed"]
    with pytest.raises(api_client.ApiError, match="HTTP 409") as info:
        api_client.clone_run(parent["id"], {"objective.alpha": 0.07}, idempotency_key=key)
    assert info.value.status == 409
