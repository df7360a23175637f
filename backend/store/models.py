"""The SQL schema (SQLAlchemy 2 declarative). `Base.metadata` is what migrations must equal.

Iterations are numbered 0 … iterations-1. Metrics, pairs and eval samples carry natural unique
keys so that a retried stage or a re-sent HTTP batch never duplicates rows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

RUN_STATUSES: tuple[str, ...] = ("queued", "running", "succeeded", "failed", "cancelled")
#: Which model an eval sample evaluates (aipo_core.eval_summary.EVALUATED).
EVALUATED: tuple[str, ...] = ("base", "policy")
RUN_ACTIVE: tuple[str, ...] = ("queued", "running")
RUN_FINISHED: tuple[str, ...] = ("succeeded", "failed", "cancelled")
STAGE_STATUSES: tuple[str, ...] = (
    "pending",
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "skipped",
)
STAGE_DONE: tuple[str, ...] = ("succeeded", "skipped")
TOKEN_SCOPES: tuple[str, ...] = ("read", "write")
STAGE_UNFINISHED: tuple[str, ...] = ("pending", "queued", "running", "failed", "cancelled")

# 64-bit ids on PostgreSQL; on SQLite only INTEGER PRIMARY KEY is the auto-incrementing rowid.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both backends (SQLite stores naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _in(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Sweep(Base):
    __tablename__ = "sweeps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    base_config: Mapped[dict[str, Any]] = mapped_column(JSON)
    grid: Mapped[dict[str, Any]] = mapped_column(JSON)
    max_concurrent: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(64))

    runs: Mapped[list[Run]] = relationship(back_populates="sweep", order_by="Run.id")


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (
        CheckConstraint(f"status IN ({_in(RUN_STATUSES)})", name="status"),
        Index(None, "status", "id"),
        Index(None, "objective", "id"),
        Index(None, "created_by", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    objective: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    launched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sweep_id: Mapped[int | None] = mapped_column(ForeignKey("sweeps.id"), index=True)
    sweep_point: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    parent_run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    # Name of the API token that created the run ("operator" for the bootstrap token; NULL for
    # runs stored before tokens had names).
    created_by: Mapped[str | None] = mapped_column(String(64))

    sweep: Mapped[Sweep | None] = relationship(back_populates="runs")
    iterations: Mapped[list[Iteration]] = relationship(
        back_populates="run", order_by="Iteration.index", cascade="all, delete-orphan", passive_deletes=True
    )
    stages: Mapped[list[Stage]] = relationship(
        back_populates="run", order_by="Stage.position", cascade="all, delete-orphan", passive_deletes=True
    )

    def run_config(self) -> Any:
        """The stored config as an `aipo_core.config.RunConfig`."""
        from aipo_core.config import RunConfig

        return RunConfig.model_validate(self.config)


class Iteration(Base):
    __tablename__ = "iterations"
    __table_args__ = (UniqueConstraint("run_id", "index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Summary of this iteration's pairs, written with them (pairs never change afterwards), so
    # the iterations page does not aggregate 20,000 pair rows per iteration on every view.
    pair_stats: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    run: Mapped[Run] = relationship(back_populates="iterations")


class Stage(Base):
    __tablename__ = "stages"
    __table_args__ = (
        CheckConstraint(f"status IN ({_in(STAGE_STATUSES)})", name="status"),
        CheckConstraint("progress >= 0 AND progress <= 1", name="progress"),
        UniqueConstraint("run_id", "position"),
        UniqueConstraint("run_id", "iteration", "name"),
        Index(None, "status", "heartbeat_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    iteration_id: Mapped[int] = mapped_column(ForeignKey("iterations.id", ondelete="CASCADE"), index=True)
    iteration: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(32))
    position: Mapped[int] = mapped_column(Integer)
    queue: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str | None] = mapped_column(Text)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    pid: Mapped[int | None] = mapped_column(Integer)
    task_id: Mapped[str | None] = mapped_column(String(64))
    artifact_path: Mapped[str | None] = mapped_column(Text)
    log_path: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Device, dtypes, processes and GPU the stage's model ran on (`aipo_core.devices.Placement`).
    placement: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    run: Mapped[Run] = relationship(back_populates="stages")


class Worker(Base):
    """A Celery worker as it last reported itself (heartbeat): queues, host, GPUs, current stage."""

    __tablename__ = "workers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    queues: Mapped[list[str]] = mapped_column(JSON)
    gpus: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    stage_id: Mapped[int | None] = mapped_column(ForeignKey("stages.id", ondelete="SET NULL"))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    stage: Mapped[Stage | None] = relationship()


class Metric(Base):
    __tablename__ = "metrics"
    __table_args__ = (
        # The idempotency key, ordered so that one key's history is a contiguous index range
        # (`attempt` last: the index serves history queries exactly as before attempts existed).
        UniqueConstraint("run_id", "key", "iteration", "step", "stage", "attempt"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    iteration: Mapped[int] = mapped_column(Integer, default=0)
    stage: Mapped[str] = mapped_column(String(32), default="")
    # The stage attempt that logged the point (a worker's); 0 for points sent to the API.
    attempt: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    key: Mapped[str] = mapped_column(String(200))
    step: Mapped[int] = mapped_column(BigInteger)
    value: Mapped[float | None] = mapped_column(Float)
    time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# Substring search (ILIKE '%q%') over pair texts: trigram GIN indexes on PostgreSQL only.
_TRGM_COLUMNS = ("prompt_text", "chosen_text", "rejected_text")


class Pair(Base):
    __tablename__ = "pairs"
    __table_args__ = (
        UniqueConstraint("run_id", "iteration", "idx"),
        *(
            Index(
                f"ix_pairs_{col}_trgm", col, postgresql_using="gin", postgresql_ops={col: "gin_trgm_ops"}
            ).ddl_if(dialect="postgresql")
            for col in _TRGM_COLUMNS
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    iteration: Mapped[int] = mapped_column(Integer)
    idx: Mapped[int] = mapped_column(Integer)
    uid: Mapped[str | None] = mapped_column(String(200))
    prompt: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    prompt_text: Mapped[str] = mapped_column(Text)
    chosen_text: Mapped[str] = mapped_column(Text)
    rejected_text: Mapped[str] = mapped_column(Text)
    score_chosen: Mapped[float | None] = mapped_column(Float)
    score_rejected: Mapped[float | None] = mapped_column(Float)
    chosen_length: Mapped[int | None] = mapped_column(Integer)
    rejected_length: Mapped[int | None] = mapped_column(Integer)
    chosen_chars: Mapped[int | None] = mapped_column(Integer)
    rejected_chars: Mapped[int | None] = mapped_column(Integer)
    ref_chosen_logps: Mapped[float | None] = mapped_column(Float)
    ref_rejected_logps: Mapped[float | None] = mapped_column(Float)
    s_ref: Mapped[float | None] = mapped_column(Float)
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class EvalSample(Base):
    """One judged answer. `evaluated` says which model answered: "policy" = θ_{k+1}, trained in
    iteration k; "base" = θ_0, evaluated once by iteration 0's evaluate stage (docs/evaluation.md)."""

    __tablename__ = "eval_samples"
    __table_args__ = (
        UniqueConstraint("run_id", "iteration", "benchmark", "evaluated", "idx"),
        CheckConstraint(f"evaluated IN ({_in(EVALUATED)})", name="evaluated"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    iteration: Mapped[int] = mapped_column(Integer)
    benchmark: Mapped[str] = mapped_column(String(64))
    evaluated: Mapped[str] = mapped_column(String(8), default="policy", server_default="policy")
    idx: Mapped[int] = mapped_column(Integer)
    uid: Mapped[str | None] = mapped_column(String(200))
    instruction: Mapped[str] = mapped_column(Text)
    output: Mapped[str] = mapped_column(Text)
    baseline_output: Mapped[str | None] = mapped_column(Text)
    preference: Mapped[float | None] = mapped_column(Float)
    output_chars: Mapped[int | None] = mapped_column(Integer)
    baseline_chars: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class ApiToken(Base):
    """A personal API token. Only its SHA-256 is stored (see backend/auth.py for why a plain hash).

    A name is unique among live tokens, so `aipo token revoke alice` then `create alice` rotates.
    """

    __tablename__ = "api_tokens"
    __table_args__ = (
        CheckConstraint(f"scope IN ({_in(TOKEN_SCOPES)})", name="scope"),
        Index(
            "uq_api_tokens_live_name",
            "name",
            unique=True,
            sqlite_where=text("revoked_at IS NULL"),
            postgresql_where=text("revoked_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class IdempotencyKey(Base):
    """A client's `Idempotency-Key` on a create request, and what that request created.

    Unique per (scope, key): of two requests racing with one key, the database lets one insert
    (in the same transaction as its run or sweep) and the other reads that result. `request_hash`
    is a SHA-256 of the validated request, so a reused key with another body is detected. Keys
    expire after `backend.store.idempotency.KEY_TTL` and are deleted lazily.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("scope", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scope: Mapped[str] = mapped_column(String(200))
    key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    sweep_id: Mapped[int | None] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


def execute_update(session: Any, statement: Any, *expire: tuple[type[Base], dict[str, Any]]) -> int:
    """Run a guarded bulk UPDATE, expire the cached objects it may touch; returns the row count."""
    result = session.execute(statement, execution_options={"synchronize_session": False})
    for model, where in expire:
        expire_cached(session, model, where=where)
    return int(result.rowcount)


def expire_cached(session: Any, model: type[Base], *, where: dict[str, Any]) -> None:
    """Expire in-session objects of `model` matching `where` after a bulk UPDATE.

    Bulk UPDATEs run with `synchronize_session=False`: SQLAlchemy's in-Python sync only patches
    attributes already loaded, which leaves e.g. a freshly inserted run's `finished_at` stale.
    Expired objects reload from the database on next access instead.
    """
    for obj in list(session.identity_map.values()):
        if isinstance(obj, model) and all(getattr(obj, k) == v for k, v in where.items()):
            session.expire(obj)
