"""The `aipo` console script: one Typer app composing the verbs of docs/architecture.md §9.

Each verb imports its implementation lazily so `aipo winrate` does not pay for torch, and this
composition root is the only place that knows every package. Environment variables are read
here (and in backend settings), never in aipo_core.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from aipo_core.access import ModelAccess

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


def _quiet_libraries() -> None:
    """Our progress bars replace the per-shard/per-map bars of transformers and datasets."""
    import datasets
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()


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
    from aipo_core.access import AccessError

    _quiet_libraries()
    cfg = _load_config_or_exit(config)
    root = (home or aipo_home()).expanduser()
    rid = run_id or re.sub(r"[^A-Za-z0-9_.-]+", "-", cfg.name) + "-local"
    try:
        run_local(
            cfg,
            artifact_root=root,
            run_id=rid,
            model_cache_dir=root / "models",
            console=Console(),
            access=_local_access(root),
        )
    except AccessError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


def _local_access(home: Path) -> ModelAccess:
    """A local run may read any path and load any hub model (its author is the operator), but
    remote code still needs AIPO_ALLOW_TRUST_REMOTE_CODE, and the server's internals stay off."""
    from aipo_core.access import ModelAccess
    from backend.settings import Settings

    settings = Settings(home=home)
    return ModelAccess.for_local_run(
        allow_remote_code=settings.allow_trust_remote_code,
        denied=ModelAccess.deny_paths(settings.internal_paths),
    )


@app.command()
def winrate(
    file: Annotated[Path, typer.Argument(help="Annotations file")],
    format: Annotated[str, typer.Option("--format", help="alpaca_eval | aipo")] = "alpaca_eval",
    judge: Annotated[
        str | None,
        typer.Option(help="Who judged, e.g. alpaca_eval:weighted_alpaca_eval_gpt4_turbo (default: the file)"),
    ] = None,
    baseline: Annotated[
        str | None, typer.Option(help="Baseline model, e.g. gpt4_1106_preview (default: from the file)")
    ] = None,
) -> None:
    """Win rate and length-controlled win rate of an annotations file, as one JSON object.

    LC uses AlpacaEval's published length slope only for the judge it was measured on; for any
    other judge the slope is estimated from the file (lc_win_rate null, with
    lc_unavailable_reason, when the judgements cannot identify it).
    """
    from aipo_core.winrate import winrate_from_annotations_file

    try:
        report = winrate_from_annotations_file(file, format=format, judge=judge, baseline=baseline)
    except (ValueError, OSError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(report))


@app.command()
def submit(
    config: ConfigPath,
    api: Annotated[
        str | None, typer.Option(help="API base URL (default $AIPO_API_URL or http://127.0.0.1:8000)")
    ] = None,
    token: Annotated[
        str | None, typer.Option(help="Bearer token (default $AIPO_API_TOKEN or $AIPO_HOME/token)")
    ] = None,
    upload_pairs: Annotated[
        bool,
        typer.Option(
            "--upload-pairs/--no-upload-pairs",
            help="Upload a local initial_pairs file to the server first (POST /uploads/pairs) and "
            "submit the server's copy; --no-upload-pairs sends the path as it is.",
        ),
    ] = True,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what the run would cost and create nothing.")
    ] = False,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            help="Idempotency-Key to send (default: a fresh one per invocation). Pass your own when "
            "a script may run this command again for the same submission."
        ),
    ] = None,
) -> None:
    """Submit a run config over HTTP and print the created run as JSON (retries never duplicate it)."""
    from aipo_cli.api import DEFAULT_API, ApiClient, ApiError, default_token

    cfg = _load_config_or_exit(config)
    client = ApiClient(
        api or os.environ.get("AIPO_API_URL", DEFAULT_API), token or default_token(aipo_home())
    )
    body = cfg.model_dump(mode="json")
    try:
        if dry_run:
            from rich.console import Console

            from aipo_cli.preview import preview_table

            Console().print(preview_table(client.preview_run(body)))
            return
        local_pairs = Path(cfg.initial_pairs).expanduser() if cfg.initial_pairs else None
        if upload_pairs and local_pairs is not None and local_pairs.is_file():
            stored = client.upload_pairs(local_pairs)
            typer.echo(f"uploaded {local_pairs} ({stored['pairs']} pairs) as {stored['path']}", err=True)
            body["initial_pairs"] = stored["path"]
        run = client.submit_run(body, idempotency_key=idempotency_key)
    except ApiError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    finally:
        client.close()
    typer.echo(json.dumps({k: run[k] for k in ("id", "name", "status") if k in run}))


@app.command()
def demo(
    api_port: Annotated[int, typer.Option("--api-port")] = 8000,
    dashboard_port: Annotated[int, typer.Option("--dashboard-port")] = 8501,
    keep_running: Annotated[
        bool | None,
        typer.Option("--keep-running/--exit", help="Keep the stack up afterwards (default: on a TTY)"),
    ] = None,
) -> None:
    """The main job: embedded stack + a 2-iteration AIPO run on SmolLM2-135M + summary + dashboard URL."""
    from rich.console import Console

    from aipo_cli.demo import run_demo

    _quiet_libraries()
    raise typer.Exit(
        run_demo(
            api_port=api_port, dashboard_port=dashboard_port, keep_running=keep_running, console=Console()
        )
    )


def _register_service_verbs() -> None:
    """`aipo up`, `aipo db ...` and `aipo token ...` live beside the stack code they drive."""
    from aipo_cli.db import app as db_app
    from aipo_cli.services import up
    from aipo_cli.tokens import app as token_app

    app.command()(up)
    app.add_typer(db_app, name="db")
    app.add_typer(token_app, name="token")


_register_service_verbs()


if __name__ == "__main__":
    app()
