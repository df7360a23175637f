"""Engines and sessions for SQLite (embedded) and PostgreSQL (services).

SQLite is shared by the API and the worker processes, so every connection gets WAL (readers
never block the writer), a busy timeout (writers wait instead of failing), foreign keys, and
`BEGIN IMMEDIATE`: a deferred transaction that reads first and writes later can fail with
SQLITE_BUSY without waiting when another process committed in between; taking the write lock
at BEGIN makes such transactions queue on the busy timeout instead.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from backend.home import make_private
from backend.settings import get_settings

SQLITE_BUSY_TIMEOUT_MS = 30_000


def _configure_sqlite(engine: Engine, database: Path | None, *, foreign_keys: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        if database is not None:
            # Owner-only before WAL mode is set: SQLite gives -wal/-shm the database file's mode.
            make_private(database)
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite would defer it).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:  # type: ignore[no-untyped-def]
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_db_engine(url: str, *, foreign_keys: bool = True) -> Engine:
    """A new engine for `url` with the per-backend settings above.

    `foreign_keys=False` is for migrations only: SQLite alters a table by copying it and dropping
    the old one, and with foreign keys enforced that DROP would cascade into every referencing
    table (runs → metrics, pairs, ...).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = None
        if parsed.database and parsed.database != ":memory:":
            database = Path(parsed.database).expanduser()
            database.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        )
        _configure_sqlite(engine, database, foreign_keys=foreign_keys)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


_ENGINES: dict[str, Engine] = {}
_ENGINES_LOCK = threading.Lock()


def get_engine(url: str | None = None) -> Engine:
    """The shared engine for `url` (default: the settings' database), created once per process."""
    key = url or get_settings().resolved_database_url
    with _ENGINES_LOCK:
        if key not in _ENGINES:
            _ENGINES[key] = create_db_engine(key)
        return _ENGINES[key]


def get_sessionmaker(url: str | None = None) -> sessionmaker[Session]:
    """Sessions bound to the shared engine; objects stay readable after commit."""
    return sessionmaker(bind=get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any error."""
    session = get_sessionmaker(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dispose_engines() -> None:
    """Close and forget every shared engine (tests; a worker process after fork)."""
    with _ENGINES_LOCK:
        for engine in _ENGINES.values():
            engine.dispose()
        _ENGINES.clear()
