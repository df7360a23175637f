"""Settings: AIPO_* environment, derived defaults, list parsing."""

from __future__ import annotations

from pathlib import Path

from backend.settings import Settings, get_settings


def test_defaults_derive_from_home(monkeypatch, tmp_path) -> None:
    for name in ("AIPO_DATABASE_URL", "AIPO_ARTIFACT_ROOT", "AIPO_ALLOWED_ROOTS", "AIPO_CORS_ORIGINS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AIPO_HOME", str(tmp_path))
    settings = Settings()
    assert settings.resolved_database_url == f"sqlite:///{tmp_path}/aipo.db"
    assert settings.resolved_artifact_root == tmp_path
    assert settings.resolved_allowed_roots == [tmp_path.resolve()]
    assert settings.broker_url == "filesystem://" and settings.is_embedded and settings.should_auto_migrate
    assert settings.cors_origins == [] and not settings.allow_trust_remote_code


def test_environment_overrides(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("AIPO_HOME", "~/somewhere")
    monkeypatch.setenv("AIPO_DATABASE_URL", "postgresql+psycopg://u@db/aipo")
    monkeypatch.setenv("AIPO_ALLOWED_ROOTS", f"{tmp_path}, /data")
    monkeypatch.setenv("AIPO_CORS_ORIGINS", '["http://a", "http://b"]')
    monkeypatch.setenv("AIPO_ALLOW_TRUST_REMOTE_CODE", "1")
    monkeypatch.setenv("AIPO_STAGE_MAX_ATTEMPTS", "5")
    settings = Settings()
    assert settings.home == Path("~/somewhere").expanduser()
    assert not settings.is_embedded and not settings.should_auto_migrate
    assert settings.allowed_roots == [tmp_path, Path("/data")]
    assert settings.cors_origins == ["http://a", "http://b"]
    assert settings.allow_trust_remote_code and settings.stage_max_attempts == 5


def test_get_settings_is_cached(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("AIPO_HOME", str(tmp_path))
    get_settings.cache_clear()
    try:
        assert get_settings() is get_settings() and get_settings().home == tmp_path
    finally:
        get_settings.cache_clear()
