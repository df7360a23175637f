"""`aipo db upgrade` / `aipo db current` on a fresh SQLite database."""

from __future__ import annotations

from typer.testing import CliRunner

from aipo_cli.db import app
from backend.migrate import current_revision, head_revision


def test_upgrade_then_current(tmp_path, monkeypatch) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    runner = CliRunner()
    result = runner.invoke(app, ["upgrade", "--url", url])
    assert result.exit_code == 0, result.output
    assert current_revision(url) == head_revision() and head_revision() in result.output
    current = runner.invoke(app, ["current", "--url", url])
    assert current.exit_code == 0 and f"current: {head_revision()}" in current.output


def test_upgrade_uses_settings_database(tmp_path, monkeypatch) -> None:
    from backend.settings import get_settings

    monkeypatch.setenv("AIPO_HOME", str(tmp_path))
    monkeypatch.delenv("AIPO_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    try:
        assert CliRunner().invoke(app, ["upgrade"]).exit_code == 0
        assert current_revision(f"sqlite:///{tmp_path / 'aipo.db'}") == head_revision()
    finally:
        get_settings.cache_clear()
