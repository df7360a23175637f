"""Settings: AIPO_* environment, derived defaults, list parsing."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from aipo_core.access import AccessError, ModelAccess
from backend.settings import Settings, get_settings


def test_defaults_derive_from_home(monkeypatch, tmp_path) -> None:
    for name in ("AIPO_DATABASE_URL", "AIPO_ARTIFACT_ROOT", "AIPO_ALLOWED_ROOTS", "AIPO_CORS_ORIGINS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AIPO_HOME", str(tmp_path))
    settings = Settings()
    assert settings.resolved_database_url == f"sqlite:///{tmp_path}/aipo.db"
    assert settings.resolved_artifact_root == tmp_path
    assert settings.resolved_allowed_roots == [(tmp_path / "data").resolve()]
    assert settings.allowed_hub_models == ["llm-blender/PairRM", "microsoft/deberta-v3-large"]
    assert (settings.max_iterations, settings.max_run_budget, settings.hub_offline) == (20, 1_000_000, False)
    assert settings.broker_url == "filesystem://" and settings.is_embedded and settings.should_auto_migrate
    assert settings.cors_origins == [] and not settings.allow_trust_remote_code


def test_environment_overrides(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("AIPO_HOME", "~/somewhere")
    monkeypatch.setenv("AIPO_DATABASE_URL", "postgresql+psycopg://u@db/aipo")
    monkeypatch.setenv("AIPO_ALLOWED_ROOTS", f"{tmp_path}, /data")
    monkeypatch.setenv("AIPO_CORS_ORIGINS", '["http://a", "http://b"]')
    monkeypatch.setenv("AIPO_ALLOW_TRUST_REMOTE_CODE", "1")
    monkeypatch.setenv("AIPO_STAGE_MAX_ATTEMPTS", "5")
    monkeypatch.setenv("AIPO_ALLOWED_HUB_MODELS", "Qwen/*, llm-blender/PairRM")
    monkeypatch.setenv("AIPO_MAX_RUN_BUDGET", "5000")
    settings = Settings()
    assert settings.home == Path("~/somewhere").expanduser()
    assert not settings.is_embedded and not settings.should_auto_migrate
    assert settings.allowed_roots == [tmp_path, Path("/data")]
    assert settings.cors_origins == ["http://a", "http://b"]
    assert settings.allow_trust_remote_code and settings.stage_max_attempts == 5
    assert settings.allowed_hub_models == ["Qwen/*", "llm-blender/PairRM"] and settings.max_run_budget == 5000


def test_get_settings_is_cached(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("AIPO_HOME", str(tmp_path))
    get_settings.cache_clear()
    try:
        assert get_settings() is get_settings() and get_settings().home == tmp_path
    finally:
        get_settings.cache_clear()


def test_model_access_denies_the_homes_internals_even_when_the_home_is_a_root(tmp_path) -> None:
    settings = Settings(home=tmp_path, allowed_roots=[tmp_path])
    access = settings.model_access()
    internals = [
        "token",
        "aipo.db",
        "aipo.db-wal",
        "logs/api.log",
        "broker/in/x.msg",
        "runs/3/logs/iter_0_train.log",
    ]
    for name in internals:
        with pytest.raises(AccessError, match="holds server internals"):
            access.check_path(str(tmp_path / name), "prompt_pool")
    assert access.check_path(str(tmp_path / "runs/3/iter_0/policy"), "model")
    assert ModelAccess.from_dict(access.to_dict()) == access


def test_default_data_root_is_created_private(tmp_path) -> None:
    settings = Settings(home=tmp_path / "home")
    settings.ensure_data_root()
    data = tmp_path / "home" / "data"
    assert data.is_dir() and stat.S_IMODE(data.stat().st_mode) == 0o700
    Settings(home=tmp_path / "other", allowed_roots=[tmp_path]).ensure_data_root()
    assert not (tmp_path / "other").exists()
