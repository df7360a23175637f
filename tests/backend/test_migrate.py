"""Migrations: upgrade from empty, downgrade/upgrade round trip, schema == models (both backends)."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from backend.db import create_db_engine
from backend.migrate import current_revision, downgrade, head_revision, include_object_for, upgrade
from backend.store.models import Base

TABLES = {"runs", "sweeps", "iterations", "stages", "metrics", "pairs", "eval_samples"}


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    return request.getfixturevalue("postgres_url")


def schema_diff(url: str) -> list:
    engine = create_db_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={"compare_type": True, "include_object": include_object_for(engine.dialect.name)},
            )
            return compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()


def table_names(url: str) -> set[str]:
    engine = create_db_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_from_empty_creates_schema_equal_to_models(empty_db: str) -> None:
    assert current_revision(empty_db) is None
    upgrade(empty_db)
    assert current_revision(empty_db) == head_revision()
    assert TABLES <= table_names(empty_db)
    assert schema_diff(empty_db) == []


def test_downgrade_to_base_and_upgrade_round_trip(empty_db: str) -> None:
    upgrade(empty_db)
    downgrade(empty_db, "base")
    assert table_names(empty_db) - {"alembic_version"} == set()
    assert current_revision(empty_db) is None
    upgrade(empty_db)
    assert schema_diff(empty_db) == []
    upgrade(empty_db)  # idempotent at head
    assert current_revision(empty_db) == head_revision()


def test_schema_comparison_detects_a_missing_index(empty_db: str) -> None:
    """Guards the no-diff assertion above against a comparison that can never fail."""
    upgrade(empty_db)
    engine = create_db_engine(empty_db)
    with engine.begin() as connection:
        connection.execute(text("DROP INDEX ix_runs_status_id"))
    engine.dispose()
    diff = schema_diff(empty_db)
    assert any(d[0] == "add_index" and d[1].name == "ix_runs_status_id" for d in diff)
    with engine.begin() as connection:
        connection.execute(text("CREATE INDEX ix_runs_status_id ON runs (status, id)"))
    engine.dispose()
    assert schema_diff(empty_db) == []


def test_trigram_indexes_exist_only_on_postgresql(empty_db: str) -> None:
    upgrade(empty_db)
    engine = create_db_engine(empty_db)
    try:
        names = {ix["name"] for ix in inspect(engine).get_indexes("pairs")}
        expected = engine.dialect.name == "postgresql"
    finally:
        engine.dispose()
    assert ("ix_pairs_prompt_text_trgm" in names) is expected
    downgrade(empty_db, "base")


def test_metric_attempts_migration_keeps_points_and_downgrades_to_the_latest_attempt(empty_db: str) -> None:
    """0003: existing points become attempt 0; going back keeps one point per old key, the newest."""
    upgrade(empty_db, "0001")
    engine = create_db_engine(empty_db)
    insert = (
        "INSERT INTO metrics (run_id, iteration, stage, key, step, value, time) "
        "VALUES (1, 0, 'train', 'loss', :s, :v, :t)"
    )
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO runs (id, name, objective, status, config, created_at, updated_at) "
                    "VALUES (1, 'r', 'aipo', 'running', '{}', :t, :t)"
                ),
                {"t": "2026-01-01 00:00:00"},
            )
            for step in (1, 2):
                connection.execute(text(insert), {"s": step, "v": float(step), "t": "2026-01-01 00:00:00"})
        upgrade(empty_db, "0003")
        with engine.begin() as connection:
            rows = connection.execute(text("SELECT step, attempt FROM metrics ORDER BY step")).all()
            assert [tuple(r) for r in rows] == [(1, 0), (2, 0)]
            connection.execute(
                text(
                    "INSERT INTO metrics (run_id, iteration, stage, attempt, key, step, value, time) "
                    "VALUES (1, 0, 'train', 2, 'loss', 1, 10.0, :t)"
                ),
                {"t": "2026-01-01 00:00:00"},
            )
        downgrade(empty_db, "0001")
        with engine.begin() as connection:
            rows = connection.execute(text("SELECT step, value FROM metrics ORDER BY step")).all()
        assert [tuple(r) for r in rows] == [(1, 10.0), (2, 2.0)]
    finally:
        engine.dispose()
        downgrade(empty_db, "base")
