"""`aipo up`: the API, a Celery worker and the dashboard as child processes of one command.

Each service runs in its own process group with its output in `$AIPO_HOME/logs/<service>.log`,
so stopping the stack (Ctrl-C, or `Stack.stop()` from the demo and the tests) reaches every
process it started, including the worker's stage processes' supervisors. The deployment is
chosen by the settings alone: SQLite + the filesystem broker unless AIPO_DATABASE_URL /
AIPO_BROKER_URL point at PostgreSQL / Redis; the command lines are the same.

Every service runs with umask 077 and `$AIPO_HOME` is made owner-only before they start. The
dashboard hands the server's token to whoever opens it only when it listens on loopback
(`server-token` mode, the single-user default); on any other address it asks each person to
sign in with their own token (`login` mode) and is never given the server's token.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import httpx
import typer

from aipo_cli.errors import PortInUse, ServiceUnavailable, StackFailed, UserError
from backend.home import PRIVATE_UMASK, ensure_private_dir, secure_tree
from backend.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_APP = REPO_ROOT / "dashboard" / "app.py"
SERVER_TOKEN, LOGIN = "server-token", "login"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass
class Service:
    """One started service: its process (leader of its own group) and its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class Stack:
    """The running embedded (or services-backed) stack."""

    api_url: str
    token: str
    home: Path
    dashboard_url: str | None
    dashboard_auth: str = SERVER_TOKEN
    docs_url: str | None = None
    services: list[Service] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def service(self, name: str) -> Service:
        return next(s for s in self.services if s.name == name)

    def dead(self) -> list[Service]:
        return [s for s in self.services if not s.alive()]

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM every service (a worker finishes its stage and reaps its helpers), then SIGKILL
        whatever is left in their process groups after `grace_s`."""
        for service in reversed(self.services):
            if service.alive():
                service.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for service in reversed(self.services):
            try:
                service.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(service.process.pid, signal.SIGKILL)
            service.process.wait()


def worker_command(queues: str = "gpu,cpu", name: str = "aipo-worker") -> list[str]:
    """The Celery worker command line: one stage at a time (`solo`: the task runs in the main
    process, which therefore supervises the stage child directly)."""
    return [
        sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
        "-Q", queues, "--pool", "solo", "--concurrency", "1", "-n", f"{name}@%h",
        "--without-mingle", "--without-gossip", "--loglevel", "INFO",
    ]  # fmt: skip


def api_command(port: int, host: str = "127.0.0.1") -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "backend.app:create_app", "--factory",
        "--host", host, "--port", str(port),
    ]  # fmt: skip


def dashboard_command(port: int, host: str = "127.0.0.1") -> list[str]:
    return [
        sys.executable, "-m", "streamlit", "run", str(DASHBOARD_APP),
        "--server.port", str(port), "--server.address", host, "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        # Streamlit's default red accent would read as "rejected" beside our chosen/rejected colours.
        "--theme.primaryColor", "#3b6fd8",
    ]  # fmt: skip


def spawn(name: str, command: list[str], *, logs: Path, env: dict[str, str]) -> Service:
    """Start `command` in a new session with stdout/stderr appended to `logs/<name>.log` (0600),
    under umask 077 so the files it creates (database, artifacts, stage logs) are owner-only."""
    ensure_private_dir(logs)
    log = logs / f"{name}.log"
    with os.fdopen(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as fh:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
            env=env, cwd=REPO_ROOT, start_new_session=True, umask=PRIVATE_UMASK,
        )  # fmt: skip
    return Service(name, process, log)


def dashboard_auth_mode(host: str, requested: str | None) -> str:
    """`server-token` (the dashboard uses the server's token for everyone) only on loopback.

    None picks server-token on loopback and login elsewhere; asking for server-token on another
    address is refused: anyone reaching the port could launch, cancel and clone runs.
    """
    loopback = host in LOOPBACK_HOSTS
    if requested is None:
        return SERVER_TOKEN if loopback else LOGIN
    if requested not in (SERVER_TOKEN, LOGIN):
        raise ValueError(f"dashboard auth {requested!r}: expected {SERVER_TOKEN!r} or {LOGIN!r}")
    if requested == SERVER_TOKEN and not loopback:
        raise ValueError(
            f"dashboard auth {SERVER_TOKEN!r} needs --dashboard-host 127.0.0.1 (or localhost): on {host} "
            "anyone reaching the port would act with the server's token; use login mode there"
        )
    return requested


def start_stack(
    *,
    api_port: int = 8000,
    dashboard_port: int | None = 8501,
    dashboard_host: str = "127.0.0.1",
    dashboard_auth: str | None = None,
    workers: int = 1,
    env: dict[str, str] | None = None,
    ready_timeout_s: float = 60.0,
) -> Stack:
    """Migrate (embedded), then start API, worker(s) and dashboard; return once the API answers.

    `env` overrides the process environment for the services (tests pass AIPO_HOME and URLs).
    `dashboard_auth` (None: by host, see `dashboard_auth_mode`) raises ValueError before
    anything starts if it would expose the server's token.
    """
    auth_mode = dashboard_auth_mode(dashboard_host, dashboard_auth)
    child_env = {**os.environ, **(env or {})}
    settings = _settings_for(child_env)
    ports = [("the API", "127.0.0.1", api_port)]
    if dashboard_port is not None:
        ports.append(("the dashboard", dashboard_host, dashboard_port))
    check_ports_free(ports)
    check_services(settings)
    home = settings.home
    secure_tree(home)
    token = _token(settings)
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    child_env["AIPO_API_TOKEN"] = token
    if settings.should_auto_migrate:
        from backend.migrate import upgrade

        upgrade(settings.resolved_database_url)
    api_url = f"http://127.0.0.1:{api_port}"
    stack = Stack(
        api_url=api_url,
        token=token,
        home=home,
        dashboard_url=None,
        dashboard_auth=auth_mode,
        docs_url=f"{api_url}/docs" if settings.serves_public_docs else None,
    )
    logs = home / "logs"
    try:
        stack.services.append(spawn("api", api_command(api_port), logs=logs, env=child_env))
        for index in range(workers):
            name = f"worker-{index}"
            stack.services.append(spawn(name, worker_command(name=name), logs=logs, env=child_env))
        if dashboard_port is not None:
            _start_dashboard(stack, dashboard_port, dashboard_host, logs, child_env)
        wait_for_api(stack, timeout_s=ready_timeout_s)
    except BaseException:
        stack.stop()
        raise
    return stack


@contextmanager
def running_stack(**kwargs: object) -> Iterator[Stack]:
    """`start_stack` as a context manager that always stops what it started."""
    stack = start_stack(**kwargs)  # type: ignore[arg-type]
    try:
        yield stack
    finally:
        stack.stop()


def check_ports_free(ports: list[tuple[str, str, int]]) -> None:
    """PortInUse naming the first (what, host, port) something already listens on, before any
    service starts (a uvicorn that cannot bind would only say so in its log)."""
    for what, host, port in ports:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # As uvicorn binds: a port left in TIME_WAIT by an earlier run is free, a listener is not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise PortInUse(f"port {port} on {host} ({what}) is already in use") from None
                raise


def check_services(settings: Settings) -> None:
    """In services mode, ServiceUnavailable unless PostgreSQL and Redis answer (within seconds)."""
    from aipo_cli.doctor import check_broker, check_database

    checks = [check_broker(settings)]
    if not settings.is_embedded:
        checks.insert(0, check_database(settings)[0])
    failed = [check for check in checks if check.verdict == "fail"]
    if failed:
        raise ServiceUnavailable(failed[0].detail, details=[check.detail for check in failed[1:]])


def wait_for_api(stack: Stack, *, timeout_s: float) -> None:
    """Poll `GET /api/v1/health` until it answers 200; fail early if a service died."""
    deadline = time.monotonic() + timeout_s
    while True:
        dead = stack.dead()
        if dead:
            raise StackFailed(_death_report(dead), details=_log_tail(dead[0].log), hint="its log says why")
        try:
            if httpx.get(f"{stack.api_url}/api/v1/health", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"the API did not answer within {timeout_s:g} s; see {stack.service('api').log}"
            )
        time.sleep(0.25)


def up(
    api_port: Annotated[int, typer.Option("--api-port", help="Port of the HTTP API.")] = 8000,
    dashboard_port: Annotated[int, typer.Option("--dashboard-port", help="Port of the dashboard.")] = 8501,
    dashboard_host: Annotated[
        str, typer.Option("--dashboard-host", help="Address the dashboard listens on (0.0.0.0: all).")
    ] = "127.0.0.1",
    dashboard_auth: Annotated[
        str | None,
        typer.Option(
            "--dashboard-auth",
            envvar="AIPO_DASHBOARD_AUTH",
            help="server-token (loopback only: no sign-in) | login (each person signs in with a token). "
            "Default: server-token on 127.0.0.1, login elsewhere.",
        ),
    ] = None,
) -> None:
    """Start API + worker + dashboard (embedded unless DB/broker URLs are set); Ctrl-C stops all."""
    # SIGTERM (docker stop, systemd, kill) stops the stack like Ctrl-C; SIGINT is re-armed because a
    # shell starting us in the background hands us SIGINT ignored.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        dashboard_auth_mode(dashboard_host, dashboard_auth)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    stack = start_stack(
        api_port=api_port,
        dashboard_port=dashboard_port,
        dashboard_host=dashboard_host,
        dashboard_auth=dashboard_auth,
    )
    typer.echo(describe(stack))
    try:
        while not stack.dead():
            time.sleep(1.0)
        typer.echo(_death_report(stack.dead()), err=True)
        raise typer.Exit(1)
    except KeyboardInterrupt:
        typer.echo("stopping…")
    finally:
        stack.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def describe(stack: Stack) -> str:
    """The lines `aipo up` prints: where everything is and how to authenticate."""
    docs = f"(docs: {stack.docs_url})" if stack.docs_url else "(docs: off outside embedded mode)"
    sign_in = "   (sign in with a token: `aipo token create NAME`)" if stack.dashboard_auth == LOGIN else ""
    lines = [
        f"API        {stack.api_url}/api/v1   {docs}",
        f"Dashboard  {stack.dashboard_url or '(not started)'}{sign_in if stack.dashboard_url else ''}",
        f"API token  {stack.token}",
        f"Data       {stack.home}   (logs: {stack.home / 'logs'})",
        *stack.notes,
    ]
    return "\n".join(lines)


def _start_dashboard(stack: Stack, port: int, host: str, logs: Path, env: dict[str, str]) -> None:
    if not DASHBOARD_APP.exists():
        stack.notes.append(f"note: {DASHBOARD_APP} not found; dashboard not started")
        return
    dashboard_env = {**env, "AIPO_API_URL": stack.api_url, "AIPO_DASHBOARD_AUTH": stack.dashboard_auth}
    if stack.dashboard_auth == LOGIN:
        # Signed-in users bring their own tokens; the server's must not even be in reach.
        dashboard_env = {k: v for k, v in dashboard_env.items() if k not in ("AIPO_API_TOKEN", "AIPO_HOME")}
    stack.services.append(spawn("dashboard", dashboard_command(port, host), logs=logs, env=dashboard_env))
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    stack.dashboard_url = f"http://{shown_host}:{port}"


def _settings_for(env: dict[str, str]) -> Settings:
    """Settings as the services will see them: `env`'s AIPO_* values over this process's."""
    overrides = {
        key.removeprefix("AIPO_").lower(): value for key, value in env.items() if key.startswith("AIPO_")
    }
    return Settings(**overrides)


def _token(settings: Settings) -> str:
    from backend.auth import resolve_api_token

    return resolve_api_token(settings.api_token, settings.home)


def _death_report(dead: list[Service]) -> str:
    return "; ".join(f"{s.name} exited with status {s.process.returncode} (log: {s.log})" for s in dead)


def _log_tail(log: Path, lines: int = 3) -> list[str]:
    """The last non-blank lines of a service's log (where a traceback ends with its reason)."""
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
