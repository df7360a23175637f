"""`aipo db …`: database maintenance (the lead registers this as `app.add_typer(db.app, name="db")`)."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Database schema migrations.")

UrlOption = Annotated[
    str | None, typer.Option("--url", help="SQLAlchemy URL (default: AIPO_DATABASE_URL or embedded SQLite).")
]


@app.command()
def upgrade(
    url: UrlOption = None,
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    from backend import migrate
    from backend.home import secure_tree
    from backend.settings import get_settings

    settings = get_settings()
    if url is None:
        secure_tree(settings.home)  # the first command of a deployment: the home starts owner-only
    target = url or settings.resolved_database_url
    migrate.upgrade(target, revision)
    typer.echo(f"database at revision {migrate.current_revision(target)}")


@app.command()
def current(url: UrlOption = None) -> None:
    """Print the database's revision and the newest one available."""
    from backend import migrate
    from backend.settings import get_settings

    target = url or get_settings().resolved_database_url
    typer.echo(f"current: {migrate.current_revision(target)}  head: {migrate.head_revision()}")
