"""`aipo token create|list|revoke`: personal API tokens, managed on the store directly.

Like `aipo db upgrade`, these talk to the database (AIPO_DATABASE_URL, or the embedded SQLite
under $AIPO_HOME), not to the API, so they work in both deployments without a running server
and without a token: whoever can reach the database is the operator. The token is printed once
on stdout (information goes to stderr), so `TOKEN=$(aipo token create alice)` works.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

from aipo_cli.errors import UserError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Personal API tokens: one per person, stored hashed, optionally read-only.",
)

UrlOption = Annotated[
    str | None, typer.Option("--url", help="SQLAlchemy URL (default: AIPO_DATABASE_URL or embedded SQLite).")
]


@contextmanager
def _store(url: str | None) -> Iterator[Session]:
    """A session on the migrated database; the embedded one is created and migrated on first use."""
    from backend import migrate
    from backend.db import get_sessionmaker
    from backend.home import secure_tree
    from backend.settings import get_settings

    settings = get_settings()
    target = url or settings.resolved_database_url
    if target.startswith("sqlite"):
        if url is None:
            secure_tree(settings.home)
        migrate.upgrade(target)
    elif migrate.current_revision(target) != migrate.head_revision():
        raise UserError(
            "the database is not migrated to the newest schema", hint="run `aipo db upgrade` first"
        )
    with get_sessionmaker(target)() as session:
        yield session


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="Who the token is for, e.g. alice (shown as a run's creator).")],
    read_only: Annotated[
        bool, typer.Option("--read-only", help="May read everything, but not launch, cancel or clone.")
    ] = False,
    url: UrlOption = None,
) -> None:
    """Create a token and print it once (only its SHA-256 is stored)."""
    from backend.store.errors import ConflictError
    from backend.store.tokens import create_token

    with _store(url) as session:
        try:
            row, secret = create_token(session, name, read_only=read_only)
        except (ValueError, ConflictError) as exc:
            raise UserError(str(exc)) from None
    typer.echo(
        f"token #{row.id} {row.name!r} ({row.scope}) created; it is shown only now. "
        "Sign in to the dashboard with it, or send it as `Authorization: Bearer <token>`.",
        err=True,
    )
    typer.echo(secret)


@app.command("list")
def list_tokens(
    all_: Annotated[bool, typer.Option("--all", help="Include revoked tokens.")] = False,
    url: UrlOption = None,
) -> None:
    """The tokens (never their values): id, name, scope, created, last used, revoked."""
    from backend.store.tokens import list_tokens as stored_tokens

    with _store(url) as session:
        rows = stored_tokens(session, include_revoked=all_)
    table = Table("id", "name", "scope", "created", "last used", "revoked")
    for row in rows:
        table.add_row(
            str(row.id),
            row.name,
            row.scope,
            _when(row.created_at),
            _when(row.last_used_at),
            _when(row.revoked_at),
        )
    Console(width=120).print(table if rows else "no tokens (create one with `aipo token create NAME`)")


@app.command()
def revoke(
    token: Annotated[str, typer.Argument(metavar="NAME|ID", help="The live token's name or id.")],
    url: UrlOption = None,
) -> None:
    """Revoke a token: the API answers it with 401 from the next request on."""
    from backend.store.errors import NotFoundError
    from backend.store.tokens import revoke_token

    with _store(url) as session:
        try:
            row = revoke_token(session, token)
        except NotFoundError as exc:
            raise UserError(str(exc), hint="`aipo token list` shows the live tokens") from None
    typer.echo(f"token #{row.id} {row.name!r} revoked")


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "-"
