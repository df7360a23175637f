"""`aipo doctor` against real services: a stopped PostgreSQL (a port nothing listens on; the shared
server is never stopped) is a failure with exit status 1; the running PostgreSQL and Redis pass."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from typer.testing import CliRunner

from aipo_cli.doctor import Check, check_chromium, check_home, check_migrations
from aipo_cli.main import app
from backend.migrate import head_revision, upgrade
from backend.settings import Settings
from tests.backend.conftest import postgres_url, redis_url  # noqa: F401
from tests.worker.harness import free_port


def doctor(env: dict[str, str]):
    return CliRunner().invoke(app, ["doctor"], env={"COLUMNS": "200", **env})


def verdicts(output: str) -> dict[str, tuple[str, str]]:
    """check name → (verdict, detail) from the plain (non-terminal) output."""
    found = {}
    for line in output.splitlines():
        verdict, _, rest = line.partition("  ")
        if verdict.strip() in ("ok", "warn", "fail"):
            name, _, detail = rest.strip().partition("  ")
            found[name.strip()] = (verdict.strip(), detail.strip())
    return found


def test_a_stopped_postgresql_fails_in_services_mode(tmp_path: Path, redis_url: str) -> None:  # noqa: F811
    stopped = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test"
    result = doctor({"AIPO_HOME": str(tmp_path), "AIPO_DATABASE_URL": stopped, "AIPO_BROKER_URL": redis_url})
    assert result.exit_code == 1, result.output
    lines = verdicts(result.stdout)
    assert lines["database"][0] == "fail" and "cannot reach the database" in lines["database"][1]
    assert "Connection refused" in lines["database"][1]
    assert lines["migrations"] == ("fail", "unknown: the database cannot be reached")
    assert lines["broker"][0] == "ok"
    assert result.stdout.rstrip().endswith("required check(s) failed: database, migrations")


def test_running_postgresql_and_redis_pass(tmp_path: Path, postgres_url: str, redis_url: str) -> None:  # noqa: F811
    env = {"AIPO_HOME": str(tmp_path), "AIPO_DATABASE_URL": postgres_url, "AIPO_BROKER_URL": redis_url}
    before = verdicts(doctor(env).stdout)
    assert before["database"][0] == "ok" and "(services mode) answers" in before["database"][1]
    assert before["migrations"] == ("fail", f"at none, head {head_revision()}: run `aipo db upgrade`")
    upgrade(postgres_url)
    result = doctor(env)
    lines = verdicts(result.stdout)
    assert lines["migrations"] == ("ok", f"at head ({head_revision()})")
    assert lines["broker"] == ("ok", f"Redis at {redis_url} answers")
    for name in ("python", "dependencies", "torch", "AIPO_HOME", "free disk", "bundled model"):
        assert lines[name][0] in ("ok", "warn"), (name, lines[name])
    assert result.exit_code == (1 if any(v == "fail" for v, _ in lines.values()) else 0)


def test_a_stopped_redis_fails(tmp_path: Path) -> None:
    result = doctor({"AIPO_HOME": str(tmp_path), "AIPO_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert result.exit_code == 1 and verdicts(result.stdout)["broker"][0] == "fail"


def test_the_embedded_deployment_needs_no_service(tmp_path: Path) -> None:
    lines = verdicts(doctor({"AIPO_HOME": str(tmp_path / "new"), "AIPO_DATABASE_URL": ""}).stdout)
    assert lines["database"][0] == "ok" and "created on first start" in lines["database"][1]
    assert lines["migrations"][0] == "ok" and lines["broker"][0] == "ok"
    assert lines["AIPO_HOME"] == (
        "ok",
        f"{tmp_path / 'new'} does not exist yet; created owner-only on first use",
    )


def test_home_permissions(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)
    assert check_home(Settings(home=home)).verdict == "warn"
    os.chmod(home, 0o700)
    assert check_home(Settings(home=home)) == Check("AIPO_HOME", "ok", f"{home} (0700, writable)")
    (tmp_path / "file").write_text("")
    assert check_home(Settings(home=tmp_path / "file")).verdict == "fail"
    if os.geteuid() != 0:  # root writes anywhere
        os.chmod(home, stat.S_IRUSR | stat.S_IXUSR)
        assert check_home(Settings(home=home)).verdict == "fail"


def test_an_outdated_embedded_database_is_migrated_on_start_but_not_in_services_mode(tmp_path: Path) -> None:
    embedded = Settings(home=tmp_path)
    assert check_migrations(embedded, "0001").verdict == "warn"
    services = Settings(home=tmp_path, database_url="postgresql+psycopg://x@127.0.0.1/db")
    assert check_migrations(services, "0001").verdict == "fail"


def test_chromium_is_optional(tmp_path: Path) -> None:
    assert check_chromium(tmp_path / "chromium").verdict == "warn"


def test_passwords_are_never_printed(tmp_path: Path) -> None:
    database = f"postgresql+psycopg://postgres:hunter2@127.0.0.1:{free_port()}/test"
    broker = f"redis://:hunter3@127.0.0.1:{free_port()}/0"
    result = doctor({"AIPO_HOME": str(tmp_path), "AIPO_DATABASE_URL": database, "AIPO_BROKER_URL": broker})
    assert "hunter" not in result.output and "postgres:***@" in result.output
