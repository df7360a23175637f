"""Metric points keyed by stage attempt.

A retried stage used to log its curve into the same (run, key, iteration, step, stage) keys as
the attempt before it, so the first write won and the two curves mixed. `attempt` (0 for
points sent to the API) joins the unique key, last, so that the index keeps serving the history
queries as before (measured: putting it before `step` made PostgreSQL's counts slower).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_KEY = ("run_id", "key", "iteration", "step", "stage")
NEW_KEY = ("run_id", "key", "iteration", "step", "stage", "attempt")


def _name(columns: Sequence[str]) -> str:
    return op.f(f"uq_metrics_{'_'.join(columns)}")


def upgrade() -> None:
    with op.batch_alter_table("metrics") as batch:
        batch.add_column(sa.Column("attempt", sa.Integer(), nullable=False, server_default="0"))
        batch.drop_constraint(_name(OLD_KEY), type_="unique")
        batch.create_unique_constraint(_name(NEW_KEY), list(NEW_KEY))


def downgrade() -> None:
    # The old key holds one point per (key, iteration, step, stage): keep the latest attempt's.
    op.execute(
        "DELETE FROM metrics WHERE EXISTS (SELECT 1 FROM metrics AS newer "
        "WHERE newer.run_id = metrics.run_id AND newer.key = metrics.key "
        "AND newer.iteration = metrics.iteration AND newer.step = metrics.step "
        "AND newer.stage = metrics.stage AND newer.attempt > metrics.attempt)"
    )
    with op.batch_alter_table("metrics") as batch:
        batch.drop_constraint(_name(NEW_KEY), type_="unique")
        batch.create_unique_constraint(_name(OLD_KEY), list(OLD_KEY))
        batch.drop_column("attempt")
