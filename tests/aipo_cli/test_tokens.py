"""`aipo token create|list|revoke` against the store the API reads (SQLite and PostgreSQL)."""

from __future__ import annotations

import uuid

from typer.testing import CliRunner

from aipo_cli.main import app
from tests.backend.conftest import Api, client_with, run_config

runner = CliRunner()


def aipo(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_created_token_works_until_revoked(api: Api) -> None:
    url = api.settings.resolved_database_url
    name = f"alice-{uuid.uuid4().hex[:6]}"
    code, out, err = aipo("token", "create", name, "--url", url)
    assert code == 0, err
    token = out.strip()
    assert token.startswith("aipo_") and len(token) > 40 and "shown only now" in err
    client = client_with(api, token)
    run = client.post("/api/v1/runs", json=run_config())
    assert run.status_code == 201 and run.json()["created_by"] == name

    code, out, _ = aipo("token", "list", "--url", url)
    assert code == 0 and name in out and "write" in out and token not in out
    assert aipo("token", "create", name, "--url", url)[0] == 2  # a live token has this name

    code, out, _ = aipo("token", "revoke", name, "--url", url)
    assert code == 0 and "revoked" in out
    assert client.get("/api/v1/runs").status_code == 401
    assert name not in aipo("token", "list", "--url", url)[1]
    assert name in aipo("token", "list", "--all", "--url", url)[1]
    assert aipo("token", "revoke", name, "--url", url)[0] == 2  # nothing live left to revoke


def test_read_only_token_from_the_cli(api: Api) -> None:
    url = api.settings.resolved_database_url
    name = f"viewer-{uuid.uuid4().hex[:6]}"
    code, out, err = aipo("token", "create", name, "--read-only", "--url", url)
    assert code == 0, err
    reader = client_with(api, out.strip())
    assert reader.get("/api/v1/runs").status_code == 200
    assert reader.post("/api/v1/runs", json=run_config()).status_code == 403
    listed = aipo("token", "list", "--url", url)[1]
    assert any(name in line and "read" in line for line in listed.splitlines())
    code, _, _ = aipo("token", "revoke", listed.split(name)[0].split("│")[-2].strip(), "--url", url)  # by id
    assert code == 0 and reader.get("/api/v1/runs").status_code == 401


def test_bad_names_are_refused(api: Api) -> None:
    url = api.settings.resolved_database_url
    for bad in ("operator", "_x", "a b", "x" * 65, "ünï"):
        code, _, err = aipo("token", "create", bad, "--url", url)
        assert code == 2 and "token name" in err


def test_embedded_home_is_created_private_and_migrated(tmp_path, monkeypatch) -> None:
    import stat

    from backend.settings import get_settings

    home = tmp_path / "home"
    monkeypatch.setenv("AIPO_HOME", str(home))
    monkeypatch.delenv("AIPO_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    try:
        code, out, err = aipo("token", "create", "bob")
    finally:
        get_settings.cache_clear()
    assert code == 0 and out.strip().startswith("aipo_"), err
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "aipo.db").stat().st_mode) == 0o600
