"""Apply the Alembic migrations in `migrations/` (shipped inside the package).

Used by `aipo db upgrade`, by the API on start in embedded mode, and by the tests.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config

from backend.settings import get_settings


def _migrations_dir() -> Path:
    """The `migrations` package folder (installed next to `backend`, or in the source tree)."""
    try:
        import migrations
    except ModuleNotFoundError:  # an editable install made before migrations/ existed
        return Path(__file__).resolve().parents[1] / "migrations"
    return Path(migrations.__file__).parent


ALEMBIC_INI = _migrations_dir() / "alembic.ini"


def alembic_config(url: str | None = None) -> Config:
    """Alembic config pointing at our scripts and at `url` (default: the settings' database)."""
    config = Config(str(ALEMBIC_INI))
    # ConfigParser interpolation treats '%' specially; URL-encoded passwords contain it.
    config.set_main_option("sqlalchemy.url", (url or get_settings().resolved_database_url).replace("%", "%%"))
    return config


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Bring the database at `url` to `revision`."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str | None, revision: str = "base") -> None:
    """Roll the database at `url` back to `revision`."""
    command.downgrade(alembic_config(url), revision)


def current_revision(url: str | None = None) -> str | None:
    """The revision the database is at (None when never migrated)."""
    from alembic.runtime.migration import MigrationContext

    from backend.db import create_db_engine

    engine = create_db_engine(url or get_settings().resolved_database_url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str | None:
    """The newest revision in the scripts."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def include_object_for(dialect: str) -> Callable[..., bool]:
    """Alembic `include_object` hook that ignores objects meant for another dialect.

    Alembic does not understand `Index.ddl_if(dialect=...)`, so without this the PostgreSQL-only
    trigram indexes would show up as "missing" when comparing against SQLite.
    """

    def include_object(obj: Any, _name: str | None, type_: str, _reflected: bool, _compare_to: Any) -> bool:
        if type_ != "index":
            return True
        ddl_if = getattr(obj, "_ddl_if", None)
        return ddl_if is None or ddl_if.dialect in (None, dialect)

    return include_object
