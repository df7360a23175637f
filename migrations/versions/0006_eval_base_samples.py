"""eval samples say which model they evaluate (θ_0 base or the iteration's policy)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

Iteration 0's evaluate stage also evaluates the base model θ_0 with the same judge and prompts
(docs/evaluation.md), so eval_samples gains `evaluated` ('base' | 'policy', existing rows are
'policy') and it joins the natural key: (run, iteration, benchmark, evaluated, idx).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_KEY = "uq_eval_samples_run_id_iteration_benchmark_idx"
NEW_KEY = "uq_eval_samples_run_id_iteration_benchmark_evaluated_idx"
KEY_COLUMNS = ("run_id", "iteration", "benchmark")


def upgrade() -> None:
    with op.batch_alter_table("eval_samples") as batch:
        batch.add_column(sa.Column("evaluated", sa.String(length=8), server_default="policy", nullable=False))
        batch.drop_constraint(op.f(OLD_KEY), type_="unique")
        batch.create_unique_constraint(op.f(NEW_KEY), [*KEY_COLUMNS[:3], "evaluated", "idx"])
        batch.create_check_constraint(op.f("ck_eval_samples_evaluated"), "evaluated IN ('base', 'policy')")


def downgrade() -> None:
    op.execute("DELETE FROM eval_samples WHERE evaluated = 'base'")
    with op.batch_alter_table("eval_samples") as batch:
        batch.drop_constraint(op.f("ck_eval_samples_evaluated"), type_="check")
        batch.drop_constraint(op.f(NEW_KEY), type_="unique")
        batch.create_unique_constraint(op.f(OLD_KEY), [*KEY_COLUMNS[:3], "idx"])
        batch.drop_column("evaluated")
