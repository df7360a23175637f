"""Alembic environment: runs migrations on the connection `backend.migrate` hands over.

Migrations always run in ONE transaction (SQLite DDL is transactional too), and on PostgreSQL
under an advisory lock, so an API and a CLI upgrading at the same moment apply each step once.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from backend.db import create_db_engine
from backend.migrate import include_object_for
from backend.store.models import Base

MIGRATION_LOCK_ID = 0x41495030  # "AIP0": any constant shared by every upgrader


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    dialect = connection.dialect.name
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        transactional_ddl=True,
        render_as_batch=dialect == "sqlite",
        compare_type=True,
        include_object=include_object_for(dialect),
    )
    with context.begin_transaction():
        if dialect == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_ID})
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    # Foreign keys off on SQLite: batch mode's table rebuild must not cascade (backend/db.py).
    engine = create_db_engine(context.config.get_main_option("sqlalchemy.url"), foreign_keys=False)
    try:
        with engine.connect() as connection:
            _run(connection)
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; run `aipo db upgrade`")
run_migrations_online()
