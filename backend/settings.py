"""Service settings: the one place that reads AIPO_* environment variables.

`aipo_core` never reads the environment; the backend and worker build a `Settings` here and
pass plain values down. `get_settings()` is cached so every module sees the same object; tests
call `get_settings.cache_clear()` after changing the environment.
"""

from __future__ import annotations

import glob
import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from aipo_core.access import DEFAULT_HUB_MODELS, ModelAccess

FILESYSTEM_BROKER = "filesystem://"
DATA_DIR = "data"


def _split_list(value: Any) -> Any:
    """Accept a JSON list or a comma-separated string (friendlier in a shell)."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """AIPO Lab service configuration (env prefix `AIPO_`)."""

    model_config = SettingsConfigDict(env_prefix="AIPO_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path("~/.aipo"), description="Data folder.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite under home.")
    broker_url: str = Field(FILESYSTEM_BROKER, description="Celery broker; default kombu filesystem.")
    artifact_root: Path | None = Field(None, description="Where run artifacts live; default home.")
    api_token: str | None = Field(None, description="Bearer token; default $AIPO_HOME/token.")
    allowed_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Data roots: local paths in run configs must lie under one of these; "
        "default $AIPO_HOME/data. The token, database, logs and broker are refused even inside.",
    )
    allow_trust_remote_code: bool = False
    allowed_hub_models: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_HUB_MODELS),
        description="Glob patterns of hub ids a run config may load (e.g. 'Qwen/*'; '*' = any).",
    )
    hub_offline: bool = Field(False, description="Never contact the hub: models load from its cache only.")
    max_iterations: int = Field(20, ge=1, description="Most iterations one run may ask for.")
    max_run_budget: int = Field(
        1_000_000,
        ge=1,
        description="Most candidate generations per run: "
        "iterations × generation.num_candidates × self_instruct.num_instructions.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Request limits (checked before a body is read; see backend/access.py).
    max_request_bytes: int = Field(
        1024 * 1024, ge=1024, description="Largest request body (413 above it); uploads have their own."
    )
    max_upload_bytes: int = Field(
        256 * 1024 * 1024, ge=1024, description="Largest body of POST /uploads/pairs (streamed to disk)."
    )
    check_input_files: bool = Field(
        True,
        description="POST /runs reads the files and model folders a config names (aipo_core.inputs); "
        "off when the API cannot see the workers' files (they check them again either way).",
    )
    check_input_max_bytes: int = Field(
        16 * 1024 * 1024,
        ge=0,
        description="Most bytes of each data file POST /runs reads; the worker reads the rest.",
    )
    public_docs: bool | None = Field(
        None, description="Serve /docs, /redoc, /openapi.json without a token; None = only in embedded mode."
    )
    auto_migrate: bool | None = Field(
        None, description="Apply migrations when the API starts; None = only in embedded mode."
    )
    # Worker timing and retry knobs (read by worker/; defined here so AIPO_* lives in one place).
    stage_heartbeat_timeout_s: float = Field(120.0, gt=0, description="A running stage older is stale.")
    stage_heartbeat_interval_s: float = Field(10.0, gt=0, description="How often a running stage beats.")
    stage_queued_timeout_s: float = Field(60.0, gt=0, description="Re-send a queued stage after this.")
    stage_max_attempts: int = Field(3, ge=1, description="Attempts before a stale/crashed stage fails.")
    stage_kill_grace_s: float = Field(5.0, ge=0, description="SIGTERM to SIGKILL grace on cancel.")
    reconcile_interval_s: float = Field(15.0, gt=0, description="Period of the worker's reconciler.")

    @field_validator("allowed_roots", "cors_origins", "allowed_hub_models", mode="before")
    @classmethod
    def _parse_list(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("home", "artifact_root", mode="after")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser().absolute() if value is not None else None

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'aipo.db'}"

    @property
    def resolved_artifact_root(self) -> Path:
        return self.artifact_root or self.home

    @property
    def default_data_root(self) -> Path:
        return self.home / DATA_DIR

    @property
    def resolved_allowed_roots(self) -> list[Path]:
        roots = self.allowed_roots or [self.default_data_root]
        return [Path(root).expanduser().resolve() for root in roots]

    @property
    def internal_paths(self) -> list[Path]:
        """What a run config may never read, even inside a data root: the API token, the SQLite
        database (and its journal files), service and stage logs, the broker folders, the hub token."""
        from huggingface_hub.constants import HF_TOKEN_PATH

        paths = [self.home / "token", self.home / "logs", self.broker_folder]
        if self.is_embedded:
            database = Path(self.resolved_database_url.removeprefix("sqlite:///"))
            journals = ("", "-wal", "-shm", "-journal")
            paths += [database.with_name(database.name + suffix) for suffix in journals]
        hub_token = Path(HF_TOKEN_PATH)
        return [*paths, hub_token, hub_token.with_name("stored_tokens")]

    def model_access(self) -> ModelAccess:
        """The loading policy the API checks run configs with and the worker loads under."""
        runs = glob.escape(str(self.resolved_artifact_root.resolve() / "runs"))
        stage_logs = (f"{runs}/*/logs", f"{runs}/*/logs/*")  # backend.store.stages.stage_log_path
        return ModelAccess(
            allow_remote_code=self.allow_trust_remote_code,
            hub_models=tuple(self.allowed_hub_models),
            data_roots=tuple(self.resolved_allowed_roots),
            denied=ModelAccess.deny_paths(self.internal_paths) + stage_logs,
            offline=self.hub_offline,
        )

    def ensure_data_root(self) -> None:
        """Create the default data root (0700) so operators know where run inputs go."""
        if not self.allowed_roots:
            self.default_data_root.mkdir(mode=0o700, parents=True, exist_ok=True)

    @property
    def is_embedded(self) -> bool:
        """Embedded = SQLite store (one machine, no services)."""
        return self.resolved_database_url.startswith("sqlite")

    @property
    def should_auto_migrate(self) -> bool:
        return self.is_embedded if self.auto_migrate is None else self.auto_migrate

    @property
    def broker_folder(self) -> Path:
        return self.home / "broker"

    @property
    def serves_public_docs(self) -> bool:
        """Interactive docs without a token: on a single-user embedded stack only, unless set."""
        return self.is_embedded if self.public_docs is None else self.public_docs

    @property
    def uploads_dir(self) -> Path:
        """Where uploaded pair files land: `uploads/` in the first allowed data root, so the path the
        upload route returns passes the config's allowed-roots check as it is."""
        return self.resolved_allowed_roots[0] / "uploads"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once from the environment)."""
    return Settings()
