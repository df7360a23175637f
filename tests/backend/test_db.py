"""SQLite is configured so the API and worker processes can share it."""

from __future__ import annotations

import multiprocessing

from sqlalchemy import text

from backend.db import create_db_engine, session_scope
from backend.migrate import upgrade
from backend.store import metrics, runs
from tests.backend.conftest import small_config


def test_sqlite_pragmas(tmp_path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'a.db'}")
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 30000
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    engine.dispose()


def _writer(url: str, run_id: int, offset: int) -> None:
    for i in range(20):
        with session_scope(url) as session:
            runs.get_run(session, run_id)  # read first, then write: the lock-upgrade pattern
            metrics.ingest_metrics(session, run_id, [{"key": "k", "step": offset + i, "value": 1.0}])


def test_concurrent_processes_read_then_write_without_lock_errors(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    upgrade(url)
    with session_scope(url) as session:
        run_id = runs.create_run(session, small_config()).id
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(url, run_id, 1000 * p)) for p in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
    assert [proc.exitcode for proc in procs] == [0, 0]
    with session_scope(url) as session:
        assert metrics.metric_history(session, run_id, "k")[0] == 40
