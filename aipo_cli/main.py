"""The `aipo` console script: one Typer app composing the verbs of DESIGN.md §3.

Each verb imports its implementation lazily so `aipo winrate` does not pay for torch, and so
this composition root is the only place that knows every package.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="AIPO Lab: iterative preference optimisation."
)


@app.command()
def validate(
    config: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Run config YAML")],
) -> None:
    """Validate a run config and print it with every default filled in."""
    from pydantic import ValidationError

    from aipo_core.config import load_run_config

    try:
        cfg = load_run_config(config)
    except ValidationError as exc:
        for err in exc.errors():
            typer.echo(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(cfg.model_dump(), indent=2))


if __name__ == "__main__":
    app()
