"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-26

Runs, sweeps, iterations, stages, metrics, pairs and eval samples. On PostgreSQL the pair
texts get trigram GIN indexes (pg_trgm is a trusted extension: the database owner may create it)
so that substring search stays fast at hundreds of thousands of pairs.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _is_postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("base_config", sa.JSON(), nullable=False),
        sa.Column("grid", sa.JSON(), nullable=False),
        sa.Column("max_concurrent", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sweeps")),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("objective", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("launched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sweep_id", sa.Integer(), nullable=True),
        sa.Column("sweep_point", sa.JSON(), nullable=True),
        sa.Column("parent_run_id", sa.Integer(), nullable=True),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')", name=op.f("ck_runs_status")
        ),
        sa.ForeignKeyConstraint(["parent_run_id"], ["runs.id"], name=op.f("fk_runs_parent_run_id_runs")),
        sa.ForeignKeyConstraint(["sweep_id"], ["sweeps.id"], name=op.f("fk_runs_sweep_id_sweeps")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    op.create_index(op.f("ix_runs_name"), "runs", ["name"], unique=False)
    op.create_index(op.f("ix_runs_objective_id"), "runs", ["objective", "id"], unique=False)
    op.create_index(op.f("ix_runs_status_id"), "runs", ["status", "id"], unique=False)
    op.create_index(op.f("ix_runs_sweep_id"), "runs", ["sweep_id"], unique=False)
    op.create_table(
        "eval_samples",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("iteration", sa.Integer(), nullable=False),
        sa.Column("benchmark", sa.String(length=64), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("uid", sa.String(length=200), nullable=True),
        sa.Column("instruction", sa.Text(), nullable=False),
        sa.Column("output", sa.Text(), nullable=False),
        sa.Column("baseline_output", sa.Text(), nullable=True),
        sa.Column("preference", sa.Float(), nullable=True),
        sa.Column("output_chars", sa.Integer(), nullable=True),
        sa.Column("baseline_chars", sa.Integer(), nullable=True),
        sa.Column("output_tokens", sa.Integer(), nullable=True),
        sa.Column("extra", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_eval_samples_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_eval_samples")),
        sa.UniqueConstraint(
            "run_id",
            "iteration",
            "benchmark",
            "idx",
            name=op.f("uq_eval_samples_run_id_iteration_benchmark_idx"),
        ),
    )
    op.create_table(
        "iterations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pair_stats", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_iterations_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_iterations")),
        sa.UniqueConstraint("run_id", "index", name=op.f("uq_iterations_run_id_index")),
    )
    op.create_table(
        "metrics",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("iteration", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_metrics_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metrics")),
        sa.UniqueConstraint(
            "run_id",
            "key",
            "iteration",
            "step",
            "stage",
            name=op.f("uq_metrics_run_id_key_iteration_step_stage"),
        ),
    )
    op.create_table(
        "pairs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("iteration", sa.Integer(), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("uid", sa.String(length=200), nullable=True),
        sa.Column("prompt", sa.JSON(), nullable=False),
        sa.Column("prompt_text", sa.Text(), nullable=False),
        sa.Column("chosen_text", sa.Text(), nullable=False),
        sa.Column("rejected_text", sa.Text(), nullable=False),
        sa.Column("score_chosen", sa.Float(), nullable=True),
        sa.Column("score_rejected", sa.Float(), nullable=True),
        sa.Column("chosen_length", sa.Integer(), nullable=True),
        sa.Column("rejected_length", sa.Integer(), nullable=True),
        sa.Column("chosen_chars", sa.Integer(), nullable=True),
        sa.Column("rejected_chars", sa.Integer(), nullable=True),
        sa.Column("ref_chosen_logps", sa.Float(), nullable=True),
        sa.Column("ref_rejected_logps", sa.Float(), nullable=True),
        sa.Column("s_ref", sa.Float(), nullable=True),
        sa.Column("extra", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_pairs_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pairs")),
        sa.UniqueConstraint("run_id", "iteration", "idx", name=op.f("uq_pairs_run_id_iteration_idx")),
    )
    if _is_postgresql():
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.create_index(
            "ix_pairs_prompt_text_trgm",
            "pairs",
            ["prompt_text"],
            postgresql_using="gin",
            postgresql_ops={"prompt_text": "gin_trgm_ops"},
        )
        op.create_index(
            "ix_pairs_chosen_text_trgm",
            "pairs",
            ["chosen_text"],
            postgresql_using="gin",
            postgresql_ops={"chosen_text": "gin_trgm_ops"},
        )
        op.create_index(
            "ix_pairs_rejected_text_trgm",
            "pairs",
            ["rejected_text"],
            postgresql_using="gin",
            postgresql_ops={"rejected_text": "gin_trgm_ops"},
        )
    op.create_table(
        "stages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("iteration_id", sa.Integer(), nullable=False),
        sa.Column("iteration", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("queue", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("task_id", sa.String(length=64), nullable=True),
        sa.Column("artifact_path", sa.Text(), nullable=True),
        sa.Column("log_path", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'queued', 'running', 'succeeded', 'failed', 'cancelled', 'skipped')",
            name=op.f("ck_stages_status"),
        ),
        sa.CheckConstraint("progress >= 0 AND progress <= 1", name=op.f("ck_stages_progress")),
        sa.ForeignKeyConstraint(
            ["iteration_id"],
            ["iterations.id"],
            name=op.f("fk_stages_iteration_id_iterations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_stages_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stages")),
        sa.UniqueConstraint("run_id", "iteration", "name", name=op.f("uq_stages_run_id_iteration_name")),
        sa.UniqueConstraint("run_id", "position", name=op.f("uq_stages_run_id_position")),
    )
    op.create_index(op.f("ix_stages_iteration_id"), "stages", ["iteration_id"], unique=False)
    op.create_index(op.f("ix_stages_status_heartbeat_at"), "stages", ["status", "heartbeat_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_stages_status_heartbeat_at"), table_name="stages")
    op.drop_index(op.f("ix_stages_iteration_id"), table_name="stages")
    op.drop_table("stages")
    if _is_postgresql():
        op.drop_index("ix_pairs_prompt_text_trgm", table_name="pairs")
        op.drop_index("ix_pairs_chosen_text_trgm", table_name="pairs")
        op.drop_index("ix_pairs_rejected_text_trgm", table_name="pairs")
    op.drop_table("pairs")
    op.drop_table("metrics")
    op.drop_table("iterations")
    op.drop_table("eval_samples")
    op.drop_index(op.f("ix_runs_sweep_id"), table_name="runs")
    op.drop_index(op.f("ix_runs_status_id"), table_name="runs")
    op.drop_index(op.f("ix_runs_objective_id"), table_name="runs")
    op.drop_index(op.f("ix_runs_name"), table_name="runs")
    op.drop_table("runs")
    op.drop_table("sweeps")
