"""The `aipo` console script: one Typer app composing the verbs of docs/architecture.md §9.

Each verb imports its implementation lazily so `aipo winrate` does not pay for torch, and this
composition root is the only place that knows every package. Environment variables are read
here (and in backend settings), never in aipo_core. Failures a user can fix (an invalid config,
a malformed data file, an unreachable API …) are raised as `aipo_cli.errors.UserError`s or mapped
onto them by the app's command class: one message with a hint and exit status 2; `--debug` shows
the traceback.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from aipo_cli.errors import DEBUG_KEY, AipoGroup, ConfigError, InputError, RunFailed, UserError, config_error
from aipo_cli.openmp import configure_openmp_waiting

# Before any verb loads torch (its OpenMP runtime reads these once; nothing above imports it):
# spin briefly on a quiet machine, sleep at once on a busy one (aipo_cli/openmp.py).
configure_openmp_waiting()

if TYPE_CHECKING:
    from aipo_core.access import ModelAccess
    from aipo_core.config import RunConfig
    from aipo_core.inputs import InputReport

app = typer.Typer(
    cls=AipoGroup,
    no_args_is_help=True,
    add_completion=False,
    help="AIPO Lab: iterative preference optimisation.",
    # A traceback's locals would show tokens (the API client's headers, settings).
    pretty_exceptions_show_locals=False,
)

ConfigPath = Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Run config (YAML or JSON)")]


def aipo_home() -> Path:
    return Path(os.environ.get("AIPO_HOME", "~/.aipo")).expanduser()


@app.callback()
def main_options(
    ctx: typer.Context,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the full traceback of any error (also AIPO_DEBUG=1).")
    ] = False,
) -> None:
    """AIPO Lab: iterative preference optimisation."""
    ctx.meta[DEBUG_KEY] = debug


def load_config(path: Path) -> RunConfig:
    """The validated run config at `path`; ConfigError naming the file and each bad field."""
    import yaml
    from pydantic import ValidationError

    from aipo_core.config import load_run_config

    try:
        return load_run_config(path)
    except ValidationError as exc:
        raise config_error(path, exc.errors()) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None


def _refused_inputs(config_path: Path, report: InputReport) -> InputError:
    """One problem as the error itself (`initial_pairs: file.jsonl:6: missing field …`); several
    as a list under the config's name."""
    lines = [f"{'.'.join(p.loc)}: {p.message}" for p in report.problems()]
    if len(lines) == 1:
        return InputError(lines[0])
    fields = ", ".join(check.field for check in report.errors)
    return InputError(f"{config_path}: {fields} cannot be used", details=lines)


def _quiet_libraries() -> None:
    """Our progress bars replace the per-shard/per-map bars of transformers and datasets."""
    import datasets
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()


@app.command()
def validate(
    config: ConfigPath,
    show_config: Annotated[
        bool, typer.Option("--show-config", help="Also print the config with every default filled in.")
    ] = False,
    home: Annotated[Path | None, typer.Option(help="Data folder (default $AIPO_HOME or ~/.aipo).")] = None,
) -> None:
    """Check a run config and everything it points to: every row of its data files, its models
    and benchmarks. Exit 2 naming the first bad rows (file:line) when something cannot be used."""
    from rich.console import Console

    from aipo_cli.validation import print_report
    from aipo_core.inputs import check_inputs

    cfg = load_config(config)
    report = check_inputs(cfg, _local_access((home or aipo_home()).expanduser()))
    print_report(report, Console())
    if not report.ok:
        fields = ", ".join(check.field for check in report.errors)
        raise InputError(f"{config}: {fields} cannot be used (see above)", hint="")
    typer.echo(f"{config}: valid, and everything it names can be used")
    if show_config:
        typer.echo(json.dumps(cfg.model_dump(), indent=2))


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
        raise UserError(
            "without --local a run goes to a server",
            hint="`aipo submit CONFIG --wait` sends it and follows it",
        )
    from rich.console import Console

    from aipo_cli.local_run import run_local
    from aipo_core.inputs import check_inputs

    cfg = load_config(config)
    root = (home or aipo_home()).expanduser()
    access = _local_access(root)
    report = check_inputs(cfg, access)  # every row now, not at the stage that reads it
    if not report.ok:
        raise _refused_inputs(config, report)
    _quiet_libraries()
    rid = run_id or re.sub(r"[^A-Za-z0-9_.-]+", "-", cfg.name) + "-local"
    run_local(
        cfg, artifact_root=root, run_id=rid, model_cache_dir=root / "models", console=Console(), access=access
    )


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
        raise UserError(str(exc), hint="`aipo winrate --help` lists the formats") from None
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
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Follow the run until it ends (progress on stderr); exit 0 if it succeeded, 1 if not.",
        ),
    ] = False,
) -> None:
    """Submit a run config over HTTP and print the run as JSON (retries never duplicate it).

    With --wait, the JSON is printed once the run has ended, with its final status.
    """
    from aipo_cli.api import DEFAULT_API, ApiClient, default_token

    cfg = load_config(config)
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
            _check_local_pairs(config, local_pairs)
            stored = client.upload_pairs(local_pairs)
            typer.echo(f"uploaded {local_pairs} ({stored['pairs']} pairs) as {stored['path']}", err=True)
            body["initial_pairs"] = stored["path"]
        run = client.submit_run(body, idempotency_key=idempotency_key)
        if wait:
            run = _wait_for(client, run, cfg)
    finally:
        client.close()
    typer.echo(json.dumps({k: run[k] for k in ("id", "name", "status", "error") if k in run}))
    if wait and run["status"] != "succeeded":
        raise typer.Exit(RunFailed.exit_code)


def _check_local_pairs(config_path: Path, pairs: Path) -> None:
    """Every row of a pairs file before uploading it: a bad line is named here, not after the upload."""
    from aipo_core.inputs import check_initial_pairs

    check = check_initial_pairs(str(pairs), _local_access(aipo_home()), None, 5)
    if check.verdict == "error":
        raise InputError(
            f"{config_path}: initial_pairs cannot be used ({check.detail})",
            details=[str(row) for row in check.bad_rows],
        )


def _wait_for(client: Any, run: dict[str, Any], config: RunConfig) -> dict[str, Any]:
    """Follow `run` to its end, its progress on stderr (live on a terminal, plain lines elsewhere)."""
    from rich.console import Console

    from aipo_cli.follow import follow_run

    progress = Console(stderr=True)
    progress.print(f"submitted run {run['id']} ({run['name']}); following it (Ctrl-C stops following only)")
    benchmark = config.evaluation.benchmarks[0] if config.evaluation.benchmarks else "alpaca_eval"
    return follow_run(client, run["id"], progress, benchmark=benchmark)


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


@app.command()
def doctor() -> None:
    """Check this machine: Python and packages, torch and its GPUs, AIPO_HOME, the database, the
    broker and migrations (AIPO_DATABASE_URL / AIPO_BROKER_URL), the bundled model, Chromium.

    One line per check: ok, warn, or fail; exit 1 if anything required fails.
    """
    from rich.console import Console

    from aipo_cli.doctor import doctor as run_doctor
    from backend.settings import Settings

    raise typer.Exit(run_doctor(Settings(), Console()))


study_app = typer.Typer(no_args_is_help=True, help="Studies: several runs compared in one table and figure.")


@study_app.command("length")
def study_length(
    config: Annotated[
        Path | None,
        typer.Argument(
            exists=True, dir_okay=False, help="Base run config (default: aipo_cli/configs/length_study.yaml)"
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for table.md, table.json and the figure.")] = Path(
        "length-study"
    ),
    iterations: Annotated[
        int | None, typer.Option(min=1, max=100, help="Override the config's iterations.")
    ] = None,
    study_id: Annotated[
        str, typer.Option(help="Run ids are STUDY_ID-dpo and STUDY_ID-aipo; reuse to resume.")
    ] = "length-study",
    home: Annotated[Path | None, typer.Option(help="Data folder (default $AIPO_HOME or ~/.aipo).")] = None,
    report_only: Annotated[
        bool, typer.Option("--report-only", help="Only write the table and figure of what has run so far.")
    ] = False,
) -> None:
    """The AIPO paper's length study: DPO and AIPO from the same base model, ranked by a judge with
    a known length bonus, evaluated by a fixed judge; average length, win rate and the s_ref-vs-
    length-gap correlation per iteration (docs/length_study.md). Runs in this process."""
    import time

    from aipo_cli.study import FIGURE, bundled_config, run_length_study, study_runs, write_outputs
    from aipo_core.config import with_overrides
    from aipo_core.inputs import check_inputs

    base = load_config(config) if config is not None else bundled_config()
    if iterations is not None:
        base = with_overrides(base, {"iterations": iterations})
    root = (home or aipo_home()).expanduser()
    study_id = re.sub(r"[^A-Za-z0-9_.-]+", "-", study_id)
    if report_only:
        write_outputs(study_runs(base, study_id), root, out)
        typer.echo((out / "table.md").read_text(encoding="utf-8"))
        return
    access = _local_access(root)
    report = check_inputs(base, access)
    if not report.ok:
        raise _refused_inputs(config or Path("length_study.yaml"), report)
    _quiet_libraries()
    started = time.monotonic()
    run_length_study(
        base,
        artifact_root=root,
        study_id=study_id,
        model_cache_dir=root / "models",
        access=access,
        say=lambda line: typer.echo(f"[{time.monotonic() - started:6.0f} s] {line}"),
        # The table and figure so far after every iteration: a study stopped early still has them.
        after_iteration=lambda runs: write_outputs(runs, root, out),
    )
    typer.echo((out / "table.md").read_text(encoding="utf-8"))
    typer.echo(
        f"{out / 'table.md'}, {out / 'table.json'}, {out / FIGURE}; {time.monotonic() - started:.0f} s"
    )


def _register_service_verbs() -> None:
    """`aipo up`, `aipo db ...` and `aipo token ...` live beside the stack code they drive."""
    from aipo_cli.db import app as db_app
    from aipo_cli.services import up
    from aipo_cli.tokens import app as token_app

    app.command()(up)
    app.add_typer(db_app, name="db")
    app.add_typer(token_app, name="token")
    app.add_typer(study_app, name="study")


_register_service_verbs()


if __name__ == "__main__":
    app()
