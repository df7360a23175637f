"""Every expected failure of the CLI is one short message naming the file:line or the field, with a
hint, and exit status 2, with no traceback; `--debug` shows it; a bug keeps its traceback.

Services are real: the API is uvicorn on a free port, "PostgreSQL is stopped" is a URL whose port
nothing listens on (the shared server is never stopped), a port in use is a socket we hold.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from aipo_cli.errors import InputError, UserError, as_user_error
from aipo_cli.main import app
from tests.aipo_cli.test_submit import api_app, db  # noqa: F401
from tests.backend.conftest import TOKEN, run_config, serve
from tests.worker.harness import free_port

GOOD_PAIR = {"prompt": "Name a prime.", "chosen": "7", "rejected": "8"}


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200", **(env or {})})


def assert_user_error(result, *expected: str) -> None:
    """Exit 2, no traceback, an `error:` line and every expected fragment on stderr."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output and "╭" not in result.output
    assert result.stderr.startswith("error: ")
    for fragment in expected:
        assert fragment in result.stderr, result.stderr


@pytest.fixture
def malformed(tmp_path: Path) -> tuple[Path, Path]:
    """A config whose initial_pairs file has no `rejected` on line 6 (the issue's example)."""
    rows = [{**GOOD_PAIR, "id": i} for i in range(9)]
    del rows[5]["rejected"]
    pairs = tmp_path / "file.jsonl"
    pairs.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(run_config(name="bad-pairs", initial_pairs=str(pairs))))
    return config, pairs


def test_a_malformed_pairs_file_given_to_a_local_run_is_one_message(tmp_path, malformed) -> None:
    config, pairs = malformed
    result = invoke("run", str(config), "--local", "--home", str(tmp_path / "home"))
    assert_user_error(result, f"{pairs}:6: missing field 'rejected'", "initial_pairs", "hint: `aipo validate")
    assert len(result.stderr.splitlines()) == 2
    assert not (tmp_path / "home" / "runs").exists()  # refused before anything ran


def test_the_console_script_prints_no_traceback_either(tmp_path, malformed) -> None:
    """The installed entry point (not CliRunner): what a user in a terminal or CI log sees."""
    config, pairs = malformed
    env = {k: v for k, v in os.environ.items() if k != "AIPO_DEBUG"} | {"AIPO_HOME": str(tmp_path / "h")}
    command = [sys.executable, "-m", "aipo_cli.main", "run", str(config), "--local"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines()[0].endswith(f"{pairs}:6: missing field 'rejected' (1 row bad, 8 good)")
    assert "Traceback" not in done.stderr
    debug = subprocess.run(
        [*command[:3], "--debug", *command[3:]], capture_output=True, text=True, env=env, timeout=120
    )
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "InputError" in debug.stderr


def test_debug_lets_the_exception_through(tmp_path, malformed) -> None:
    config, _ = malformed
    result = invoke("--debug", "run", str(config), "--local", "--home", str(tmp_path / "home"))
    assert isinstance(result.exception, InputError)
    assert isinstance(invoke("run", str(config), "--local", env={"AIPO_DEBUG": "1"}).exception, InputError)


def test_an_unexpected_error_keeps_its_traceback(monkeypatch) -> None:
    def bug(*args, **kwargs):
        raise RuntimeError("a bug in a check")

    monkeypatch.setattr("aipo_cli.doctor.run_checks", bug)
    result = invoke("doctor")
    assert isinstance(result.exception, RuntimeError) and result.exit_code == 1
    assert as_user_error(RuntimeError("x")) is None and as_user_error(KeyError("x")) is None


def test_an_invalid_config_names_each_field(tmp_path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("name: x\nmodel: tiny-random-llama\ntraining: {batch_size: 0}\ngeneration: {n: 4}\n")
    for verb in (["validate"], ["run", "--local"], ["submit", "--api", "http://127.0.0.1:9"]):
        result = invoke(verb[0], str(config), *verb[1:])
        assert_user_error(result, f"{config}: invalid run config", "training.batch_size:", "generation.n:")


def test_a_yaml_syntax_error_names_the_line(tmp_path) -> None:
    config = tmp_path / "broken.yaml"
    config.write_text("name: x\nmodel: [tiny-random-llama\niterations: 2\n")
    assert_user_error(invoke("validate", str(config)), f"{config}:", "not valid YAML")


def test_an_unreachable_api(tmp_path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(run_config()))
    url = f"http://127.0.0.1:{free_port()}"
    result = invoke("submit", str(config), "--api", url, "--token", "t")
    assert_user_error(result, f"cannot reach the API at {url}/api/v1", "hint: is the stack running")


def test_a_missing_or_wrong_token(db: str, tmp_path: Path) -> None:  # noqa: F811
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(run_config()))
    with serve(api_app(db, tmp_path)) as url:
        wrong = invoke("submit", str(config), "--api", url, "--token", "not-the-token")
        missing = invoke("submit", str(config), "--api", url, env={"AIPO_HOME": str(tmp_path / "none")})
        right = invoke("submit", str(config), "--api", url, "--token", TOKEN)
    assert_user_error(wrong, "401 Unauthorized: the API refused the token", "hint: pass --token")
    assert_user_error(missing, "401 Unauthorized: no token was given")
    assert right.exit_code == 0, right.output


def test_a_config_the_server_refuses_names_the_field(db: str, tmp_path: Path) -> None:  # noqa: F811
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(run_config(prompt_pool=str(tmp_path / "nope.jsonl"))))
    with serve(api_app(db, tmp_path)) as url:
        result = invoke("submit", str(config), "--api", url, "--token", TOKEN)
    assert_user_error(result, "the API refused the run config", "prompt_pool: prompt_pool")


def test_a_bad_pairs_file_is_named_before_it_is_uploaded(tmp_path, malformed) -> None:
    config, pairs = malformed
    result = invoke("submit", str(config), "--api", f"http://127.0.0.1:{free_port()}", "--token", "t")
    assert_user_error(result, "initial_pairs cannot be used (1 row bad, 8 good)", f"{pairs}:6: missing field")


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_port_in_use(tmp_path, listening: int) -> None:
    env = {"AIPO_HOME": str(tmp_path / "home"), "AIPO_DATABASE_URL": "", "AIPO_BROKER_URL": "filesystem://"}
    result = invoke("up", "--api-port", str(listening), "--dashboard-port", str(free_port()), env=env)
    assert_user_error(result, f"port {listening} on 127.0.0.1 (the API) is already in use", "--api-port")


def test_a_stopped_database_or_broker_in_services_mode(tmp_path) -> None:
    stopped_pg = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test"
    stopped_redis = f"redis://127.0.0.1:{free_port()}/0"
    env = {
        "AIPO_HOME": str(tmp_path / "home"),
        "AIPO_DATABASE_URL": stopped_pg,
        "AIPO_BROKER_URL": stopped_redis,
    }
    ports = ["--api-port", str(free_port()), "--dashboard-port", str(free_port())]
    up = invoke("up", *ports, env=env)
    assert_user_error(
        up, "cannot reach the database at postgresql+psycopg://postgres@127.0.0.1", "cannot reach Redis"
    )
    assert "hint: `aipo doctor`" in up.stderr
    token = invoke("token", "create", "alice", "--url", stopped_pg)
    assert_user_error(token, "cannot use the database", "Connection refused")


def test_user_errors_print_message_details_and_hint() -> None:
    error = UserError("it broke", details=["a: one", "b: two"], hint="do this")
    assert error.lines() == ["error: it broke", "  a: one", "  b: two", "hint: do this"]
    assert UserError("plain").lines() == ["error: plain"] and UserError("x").exit_code == 2
