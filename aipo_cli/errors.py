"""The CLI's one place for failures: expected ones are a short message, a hint and exit status 2.

A user who mistyped a field, handed over a malformed data file, pointed at an API that is not
running or at a stopped PostgreSQL, or picked a port in use needs the file and line (or the
field) and what to do next, not a traceback whose last line says it. `UserError` and its
subclasses carry that; `as_user_error` maps the exceptions our libraries raise for such cases
(pydantic's ValidationError, `aipo_core`'s data and access errors, httpx transport errors,
SQLAlchemy/Redis connection errors, EADDRINUSE) onto them. `AipoGroup`, the Typer app's command
class, prints them and exits; anything else is a bug and keeps its traceback, as does every error
under `aipo --debug` (or AIPO_DEBUG=1).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import typer
from typer.core import TyperGroup

DEBUG_KEY = "aipo.debug"
DEBUG_HINT = "add --debug (aipo --debug …) for the traceback"


class UserError(Exception):
    """An expected failure: `message` (one line), optional `details` (one line each, e.g. one per
    invalid field) and a `hint` saying what to do; exits with `exit_code`."""

    exit_code = 2
    default_hint: str | None = None

    def __init__(self, message: str, *, details: Sequence[str] = (), hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.details = message, list(details)
        self.hint = hint if hint is not None else self.default_hint

    def lines(self) -> list[str]:
        return [f"error: {self.message}", *(f"  {line}" for line in self.details)] + (
            [f"hint: {self.hint}"] if self.hint else []
        )


class ConfigError(UserError):
    """The run config is not valid (shape, types, bounds, unknown keys)."""


class InputError(UserError):
    """A file or model the config names cannot be used (malformed rows, missing files, refused paths)."""

    default_hint = "`aipo validate CONFIG` reads every file the config names and lists each bad row"


class ApiError(UserError):
    """The API refused a request; `details` are its `field.path: message` lines."""


class ApiUnreachable(ApiError):
    default_hint = "is the stack running (`aipo up`)? Pass --api URL or set AIPO_API_URL"


class ApiUnauthorized(ApiError):
    default_hint = "pass --token or set AIPO_API_TOKEN; a person's token: `aipo token create NAME`"


class ApiServerError(ApiError):
    """A 5xx: the server failed, not the request; its log says why."""

    exit_code = 1
    default_hint = "the server's log has the traceback ($AIPO_HOME/logs/api.log for `aipo up`)"


class ServiceUnavailable(UserError):
    """A database, broker or stack service we need is not there."""

    default_hint = "`aipo doctor` checks the database, the broker and the rest of the setup"


class StackFailed(UserError):
    """A service of the stack exited while starting; `details` are the end of its log."""

    exit_code = 1


class PortInUse(UserError):
    default_hint = "stop what listens there, or pick other ports (--api-port, --dashboard-port)"


class RunFailed(UserError):
    """A run ended failed or cancelled (`aipo submit --wait`, `aipo demo`): exit 1, not a usage error."""

    exit_code = 1


def config_error(source: Path | str, errors: Sequence[Any]) -> ConfigError:
    """A pydantic ValidationError's `errors()` as one line per field; `source` names the config."""
    details = [f"{'.'.join(str(p) for p in e['loc']) or '(config)'}: {e['msg']}" for e in errors]
    return ConfigError(
        f"{source}: invalid run config",
        details=details,
        hint="fields and defaults: `aipo validate` on a config that loads, or README 'Run config'",
    )


def as_user_error(exc: BaseException) -> UserError | None:
    """The UserError an expected exception stands for; None for anything else (a bug)."""
    if isinstance(exc, UserError):
        return exc
    for mapping in (_core_error, _http_error, _service_error, _os_error):
        mapped = mapping(exc)
        if mapped is not None:
            return mapped
    return None


def _core_error(exc: BaseException) -> UserError | None:
    from pydantic import ValidationError

    from aipo_core.access import AccessError, ConfigRefused
    from aipo_core.data.jsonl import DataFileError
    from aipo_core.preflight import InsufficientMemoryError

    if isinstance(exc, ValidationError):
        if exc.title == "Settings":  # backend.settings: the AIPO_* environment
            details = [f"AIPO_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()]
            return ConfigError("an AIPO_* environment variable is invalid", details=details)
        return config_error("the run config", exc.errors())
    if isinstance(exc, ConfigRefused):
        lines = [f"{'.'.join(p.loc)}: {p.message}" for p in exc.problems]
        return InputError("the run config asks for something this machine's policy refuses", details=lines)
    if isinstance(exc, AccessError):
        return InputError(str(exc))
    if isinstance(exc, DataFileError):
        return InputError(str(exc))
    if isinstance(exc, InsufficientMemoryError):
        return UserError(str(exc), hint="lower the batch sizes or lengths it names, or use a larger device")
    return None


def _http_error(exc: BaseException) -> UserError | None:
    import httpx

    if isinstance(exc, httpx.TransportError):
        url = exc.request.url if _has_request(exc) else "the API"
        return ApiUnreachable(f"cannot reach {url}: {exc}")
    return None


def _has_request(exc: Any) -> bool:
    try:
        return exc.request is not None
    except RuntimeError:  # httpx raises when the error was built without a request
        return False


def _service_error(exc: BaseException) -> UserError | None:
    from sqlalchemy.exc import OperationalError

    if isinstance(exc, OperationalError):
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc).splitlines()[0]
        return ServiceUnavailable(f"cannot use the database: {reason}")
    broker_errors: tuple[type[BaseException], ...] = ()
    try:
        import kombu.exceptions
        import redis.exceptions

        broker_errors = (kombu.exceptions.OperationalError, redis.exceptions.ConnectionError)
    except ImportError:  # pragma: no cover - both ship with celery[redis]
        pass
    if broker_errors and isinstance(exc, broker_errors):
        return ServiceUnavailable(f"cannot reach the broker: {exc}")
    return None


def _os_error(exc: BaseException) -> UserError | None:
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return PortInUse(f"address already in use: {exc}")
    return None


def debug_requested(ctx: click.Context | None) -> bool:
    return bool(ctx is not None and ctx.meta.get(DEBUG_KEY)) or os.environ.get("AIPO_DEBUG") == "1"


def report(error: UserError) -> None:
    """Print `error` on stderr: `error: …` in red on a terminal, then details and hint."""
    first, *rest = error.lines()
    typer.secho(first, fg=typer.colors.RED, err=True)
    for line in rest:
        typer.echo(line, err=True)


class AipoGroup(TyperGroup):
    """The `aipo` command group: runs a verb and turns an expected failure into `report` + exit."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:
            error = as_user_error(exc)
            if error is None or debug_requested(ctx):
                raise
            report(error)
            raise typer.Exit(error.exit_code) from None
