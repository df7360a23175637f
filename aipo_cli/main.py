"""The `aipo` console script: one Typer app composing the verbs of DESIGN.md §3.

Each verb imports its implementation lazily so `aipo winrate` does not pay for torch, and this
composition root is the only place that knows every package. Environment variables are read
here (and in backend settings), never in aipo_core.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="AIPO Lab: iterative preference optimisation."
)

ConfigPath = Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Run config (YAML or JSON)")]


def aipo_home() -> Path:
    return Path(os.environ.get("AIPO_HOME", "~/.aipo")).expanduser()


def _load_config_or_exit(path: Path):
    from pydantic import ValidationError

    from aipo_core.config import load_run_config

    try:
        return load_run_config(path)
    except ValidationError as exc:
        for err in exc.errors():
            typer.echo(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}", err=True)
        raise typer.Exit(2) from None
    except (ValueError, OSError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


@app.command()
def validate(config: ConfigPath) -> None:
    """Validate a run config and print it with every default filled in."""
    typer.echo(json.dumps(_load_config_or_exit(config).model_dump(), indent=2))


@app.command("run")
def run_command(
    config: ConfigPath,
    local: Annotated[
        bool, typer.Option("--local", help="Run Algorithm 1 in this process (no services).")
    ] = False,
    run_id: Annotated[str | None, typer.Option(help="Reuse an id to resume its artifacts.")] = None,
    home: Annotated[Path | None, typer.Option(help="Data folder (default $AIPO_HOME or ~/.aipo).")] = None,
) -> None:
    """Run a config. With --local: in-process, resumable by --run-id; otherwise use `aipo submit`."""
    if not local:
        typer.echo("without --local a run goes to the server: use `aipo submit CONFIG`", err=True)
        raise typer.Exit(2)
    from rich.console import Console

    from aipo_cli.local_run import run_local

    cfg = _load_config_or_exit(config)
    root = (home or aipo_home()).expanduser()
    rid = run_id or re.sub(r"[^A-Za-z0-9_.-]+", "-", cfg.name) + "-local"
    run_local(cfg, artifact_root=root, run_id=rid, model_cache_dir=root / "models", console=Console())


@app.command()
def winrate(
    file: Annotated[Path, typer.Argument(help="Annotations file")],
    format: Annotated[str, typer.Option("--format", help="alpaca_eval | aipo")] = "alpaca_eval",
) -> None:
    """Win rate and length-controlled win rate of an annotations file, as one JSON object."""
    from aipo_core.winrate import winrate_from_annotations_file

    try:
        report = winrate_from_annotations_file(file, format=format)
    except (ValueError, OSError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(report))


if __name__ == "__main__":
    app()
