"""`aipo doctor`: is this machine ready? One line per check, with a verdict and what was found.

Each check is a small function returning `Check(name, verdict, detail)`: `ok`, `warn` (works, but
something is off or optional is missing) or `fail` (something required is missing or unreachable;
`aipo doctor` then exits with status 1). Services are probed with short timeouts on the URLs the
settings name (AIPO_DATABASE_URL, AIPO_BROKER_URL), so a stopped PostgreSQL is a `fail` within
seconds, not a hang. `aipo up` uses the same probes before it starts anything.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Literal

from rich.console import Console
from rich.table import Table
from rich.text import Text

from aipo_cli.progress import is_terminal
from backend.settings import FILESYSTEM_BROKER, Settings

Verdict = Literal["ok", "warn", "fail"]
STYLES = {"ok": "green", "warn": "yellow", "fail": "bold red"}
PROBE_TIMEOUT_S = 3
MIN_PYTHON = (3, 11)
CHROMIUM = Path("/usr/bin/chromium")
REPO_ROOT = Path(__file__).resolve().parent.parent
FREE_DISK_FAIL_BYTES = 1 * 2**30
FREE_DISK_WARN_BYTES = 10 * 2**30


@dataclass(frozen=True)
class Check:
    name: str
    verdict: Verdict
    detail: str


# --------------------------------------------------------------------------- Python and packages


def check_python() -> Check:
    version = ".".join(str(part) for part in sys.version_info[:3])
    if sys.version_info[:2] < MIN_PYTHON:
        return Check("python", "fail", f"{version}; AIPO Lab needs {'.'.join(map(str, MIN_PYTHON))} or newer")
    return Check("python", "ok", f"{version} ({sys.executable})")


def check_dependencies() -> Check:
    """Every dependency in pyproject.toml is installed within its range."""
    from packaging.requirements import Requirement

    try:
        requirements = [Requirement(text) for text in metadata.requires("aipo-lab") or ()]
    except metadata.PackageNotFoundError:
        return Check("dependencies", "fail", "aipo-lab is not installed: pip install -e .")
    missing, outside = [], []
    core = [r for r in requirements if r.marker is None or r.marker.evaluate({"extra": ""})]
    for requirement in core:
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            missing.append(requirement.name)
            continue
        if not requirement.specifier.contains(installed, prereleases=True):
            outside.append(f"{requirement.name} {installed} (needs {requirement.specifier})")
    if missing or outside:
        found = ([f"missing: {', '.join(missing)}"] if missing else []) + (
            [f"out of range: {', '.join(outside)}"] if outside else []
        )
        return Check("dependencies", "fail", "; ".join(found) + " (make install)")
    return Check("dependencies", "ok", f"{len(core)} packages installed within pyproject.toml's ranges")


def constraint_pins(path: Path = REPO_ROOT / "constraints.txt") -> dict[str, str]:
    """name → pinned version of constraints.txt (empty when it is not there: a non-source install)."""
    pins = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if "==" in line:
                name, version = line.split("==", 1)
                pins[name.strip().lower()] = version.strip()
    return pins


def check_pins() -> Check:
    """torch, transformers, trl … at the versions CI tests (constraints.txt; vllm on GPU hosts only)."""
    pins = constraint_pins()
    if not pins:
        return Check("pinned versions", "ok", "constraints.txt not found (not a source checkout)")
    shown, differ = [], []
    for name, pinned in pins.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # an extra's pin (vllm): `check_torch` says when a GPU host lacks it
        shown.append(f"{name} {installed}")
        if installed.split("+", 1)[0] != pinned:
            differ.append(f"{name} {installed} (pinned {pinned})")
    if differ:
        return Check("pinned versions", "warn", "differ from constraints.txt: " + ", ".join(differ))
    return Check("pinned versions", "ok", ", ".join(shown))


def check_torch() -> Check:
    """The torch build (CPU or CUDA) and the GPUs it sees."""
    try:
        import torch
    except ImportError as exc:
        return Check("torch", "fail", f"cannot import torch: {exc}")
    if torch.version.cuda is None:
        return Check("torch", "ok", f"{torch.__version__}: CPU build, no GPU used")
    count = torch.cuda.device_count()
    if count == 0:
        return Check(
            "torch", "warn", f"{torch.__version__}: CUDA {torch.version.cuda} build, but no GPU visible"
        )
    names = ", ".join(sorted({torch.cuda.get_device_name(i) for i in range(count)}))
    detail = f"{torch.__version__}: CUDA {torch.version.cuda}, {count} GPU(s) visible: {names}"
    try:
        detail += f"; vllm {metadata.version('vllm')}"
    except metadata.PackageNotFoundError:
        return Check(
            "torch", "warn", detail + "; vllm not installed (pip install -c constraints.txt -e '.[gpu]')"
        )
    return Check("torch", "ok", detail)


def check_bundled_model() -> Check:
    from aipo_core.architectures import smollm2_gguf_path

    try:
        path = smollm2_gguf_path()
    except FileNotFoundError as exc:
        return Check("bundled model", "fail", f"{exc} (the demo's model)")
    return Check(
        "bundled model", "ok", f"smollm2-135m-instruct: {path} ({path.stat().st_size / 2**20:.0f} MiB)"
    )


def check_chromium(path: Path = CHROMIUM) -> Check:
    if path.is_file() and os.access(path, os.X_OK):
        return Check("chromium", "ok", f"{path} (browser tests)")
    return Check(
        "chromium", "warn", f"{path} not found: only the browser tests need it (apt install chromium)"
    )


# --------------------------------------------------------------------------- AIPO_HOME


def _existing(path: Path) -> Path:
    """`path`, or its nearest parent that exists (what creating it would need to write to)."""
    return next((p for p in (path, *path.parents) if p.exists()), Path("/"))


def check_home(settings: Settings) -> Check:
    """$AIPO_HOME exists (or can be created), is ours alone and writable."""
    home = settings.home
    if not home.exists():
        parent = _existing(home)
        if os.access(parent, os.W_OK):
            return Check("AIPO_HOME", "ok", f"{home} does not exist yet; created owner-only on first use")
        return Check("AIPO_HOME", "fail", f"{home} does not exist and {parent} is not writable")
    if not home.is_dir():
        return Check("AIPO_HOME", "fail", f"{home} is not a folder")
    if not os.access(home, os.W_OK | os.X_OK):
        return Check("AIPO_HOME", "fail", f"{home} is not writable by this user")
    mode = stat.S_IMODE(home.stat().st_mode)
    if mode & 0o077:
        return Check(
            "AIPO_HOME",
            "warn",
            f"{home} is {mode:04o}: others may read tokens and data (tightened on `aipo up`)",
        )
    return Check("AIPO_HOME", "ok", f"{home} ({mode:04o}, writable)")


def check_disk(settings: Settings) -> Check:
    where = _existing(settings.resolved_artifact_root)
    free = shutil.disk_usage(where).free
    detail = f"{free / 2**30:.1f} GiB free at {where}"
    if free < FREE_DISK_FAIL_BYTES:
        return Check("free disk", "fail", detail + "; a run's policies need several GiB")
    if free < FREE_DISK_WARN_BYTES:
        return Check("free disk", "warn", detail + "; each kept policy of a 0.5B model takes ~2 GiB")
    return Check("free disk", "ok", detail)


# --------------------------------------------------------------------------- services


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not an SQLAlchemy URL (a broker's): drop any user:password
        scheme, sep, rest = url.partition("://")
        return f"{scheme}{sep}{rest.rsplit('@', 1)[-1]}" if sep else url


def database_revision(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Connect (failing within `timeout_s` when nothing answers) and return the Alembic revision."""
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine

    connect_args = {} if url.startswith("sqlite") else {"connect_timeout": max(1, int(timeout_s))}
    engine = create_engine(url, connect_args=connect_args)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def check_database(settings: Settings) -> tuple[Check, str | None]:
    """Reachability of the configured database, and its revision for `check_migrations`."""
    url = settings.resolved_database_url
    if settings.is_embedded:
        path = Path(url.removeprefix("sqlite:///"))
        if not path.exists():
            return Check("database", "ok", f"embedded SQLite {path} (created on first start)"), None
    try:
        revision = database_revision(url)
    except Exception as exc:  # any driver error means "cannot use it"
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        kind = "SQLite" if settings.is_embedded else "database"
        return Check("database", "fail", f"cannot reach the {kind} at {_safe_url(url)}: {reason}"), None
    kind = "embedded SQLite" if settings.is_embedded else "services mode"
    return Check("database", "ok", f"{_safe_url(url)} ({kind}) answers"), revision or ""


def check_migrations(settings: Settings, revision: str | None) -> Check:
    """Current revision vs the newest; embedded databases are migrated on start, services are not."""
    from backend.migrate import head_revision

    head = head_revision()
    if revision is None:
        if settings.is_embedded:
            return Check("migrations", "ok", f"applied on first start (head {head})")
        return Check("migrations", "fail", "unknown: the database cannot be reached")
    if revision == head:
        return Check("migrations", "ok", f"at head ({head})")
    current = revision or "none"
    if settings.should_auto_migrate:
        return Check("migrations", "warn", f"at {current}, head {head}: applied when the API starts")
    return Check("migrations", "fail", f"at {current}, head {head}: run `aipo db upgrade`")


def ping_broker(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Raise if the Redis broker at `url` does not answer PING within `timeout_s`."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        client.ping()
    finally:
        client.close()


def check_broker(settings: Settings) -> Check:
    url = settings.broker_url
    if url.startswith(FILESYSTEM_BROKER.rstrip("/")):
        folder = settings.broker_folder
        base = _existing(folder)
        if os.access(base, os.W_OK):
            return Check("broker", "ok", f"kombu filesystem transport in {folder} (embedded)")
        return Check("broker", "fail", f"{base} is not writable (the embedded broker's folder)")
    if not url.startswith(("redis://", "rediss://")):
        return Check("broker", "warn", f"{_safe_url(url)}: only Redis is probed")
    try:
        ping_broker(url)
    except Exception as exc:
        return Check("broker", "fail", f"cannot reach Redis at {_safe_url(url)}: {exc}")
    return Check("broker", "ok", f"Redis at {_safe_url(url)} answers")


# --------------------------------------------------------------------------- all of them


def run_checks(settings: Settings) -> Iterator[Check]:
    """Every check, cheapest first (the services' probes time out after PROBE_TIMEOUT_S each)."""
    simple: list[Callable[[], Check]] = [check_python, check_dependencies, check_pins, check_torch]
    for check in simple:
        yield check()
    yield check_home(settings)
    yield check_disk(settings)
    database, revision = check_database(settings)
    yield database
    yield check_migrations(settings, revision)
    yield check_broker(settings)
    yield check_bundled_model()
    yield check_chromium()


def checks_table(checks: list[Check]) -> Table:
    table = Table(title="aipo doctor", title_justify="left")
    table.add_column("check", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    table.add_column("found", overflow="fold")
    for check in checks:
        table.add_row(check.name, Text(check.verdict, style=STYLES[check.verdict]), check.detail)
    return table


def print_checks(checks: list[Check], console: Console) -> None:
    """A table on a terminal; `verdict  name  detail` lines elsewhere."""
    if is_terminal(console):
        console.print(checks_table(checks))
        return
    width = max(len(check.name) for check in checks)
    console.file.write("".join(f"{c.verdict:<4}  {c.name:<{width}}  {c.detail}\n" for c in checks))
    console.file.flush()


def doctor(settings: Settings, console: Console) -> int:
    """Print every check; 1 if any failed, else 0."""
    checks = []
    for check in run_checks(settings):
        checks.append(check)
    print_checks(checks, console)
    failed = [check.name for check in checks if check.verdict == "fail"]
    if failed:
        console.file.write(f"{len(failed)} required check(s) failed: {', '.join(failed)}\n")
    return 1 if failed else 0
