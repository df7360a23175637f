"""`aipo up` for real: API, worker and dashboard processes start, answer, and stop together."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from aipo_cli.services import DASHBOARD_APP, dashboard_auth_mode
from tests.worker.harness import free_port

UP = [sys.executable, "-m", "aipo_cli.main", "up"]


def _alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_http(url: str, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return httpx.get(url, timeout=2.0).status_code
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.25)


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_up_starts_the_embedded_stack_and_a_signal_stops_it(tmp_path: Path, stop_signal: int) -> None:
    home = tmp_path / "home"
    api_port, dashboard_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIPO_")}
    env["AIPO_HOME"] = str(home)
    up = subprocess.Popen(
        [*UP, "--api-port", str(api_port), "--dashboard-port", str(dashboard_port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        lines = [up.stdout.readline() for _ in range(4)]
        printed = "".join(lines)
        token = (home / "token").read_text().strip()
        assert f"http://127.0.0.1:{api_port}/api/v1" in printed and f"API token  {token}" in printed
        assert _wait_http(f"http://127.0.0.1:{api_port}/api/v1/health", 10) == 200
        runs = httpx.get(
            f"http://127.0.0.1:{api_port}/api/v1/runs", headers={"Authorization": f"Bearer {token}"}
        )
        assert runs.status_code == 200
        if DASHBOARD_APP.exists():
            assert f"http://127.0.0.1:{dashboard_port}" in printed
            assert _wait_http(f"http://127.0.0.1:{dashboard_port}/_stcore/health", 60) == 200
        children = _service_pids(home)
        assert {"api", "worker-0"} <= set(children)
        # Private from the start: home 0700, logs 0600, every service under umask 077.
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        assert {stat.S_IMODE(log.stat().st_mode) for log in (home / "logs").iterdir()} == {0o600}
        assert {_umask(pid) for pid in children.values()} == {0o077}
        up.send_signal(stop_signal)
        assert up.wait(timeout=30) == 0
        assert not [name for name, pid in children.items() if _alive(pid)]
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
        up.wait()


def test_up_refuses_to_share_the_server_token_off_loopback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIPO_")} | {
        "AIPO_HOME": str(tmp_path / "h")
    }
    for args, extra in (
        (["--dashboard-host", "0.0.0.0", "--dashboard-auth", "server-token"], {}),
        (["--dashboard-host", "10.1.2.3"], {"AIPO_DASHBOARD_AUTH": "server-token"}),
    ):
        done = subprocess.run([*UP, *args], capture_output=True, text=True, env=env | extra, timeout=60)
        assert done.returncode == 2 and "server-token" in done.stderr and "login" in done.stderr
    assert not (tmp_path / "h").exists()  # refused before anything started


def test_dashboard_auth_mode() -> None:
    assert dashboard_auth_mode("127.0.0.1", None) == "server-token"
    assert dashboard_auth_mode("localhost", "login") == "login"
    assert dashboard_auth_mode("0.0.0.0", None) == "login"
    with pytest.raises(ValueError, match="server-token"):
        dashboard_auth_mode("0.0.0.0", "server-token")
    with pytest.raises(ValueError):
        dashboard_auth_mode("127.0.0.1", "open")


def test_up_on_every_interface_starts_the_dashboard_in_login_mode_without_the_token(tmp_path: Path) -> None:
    home = tmp_path / "home"
    api_port, dashboard_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIPO_")} | {"AIPO_HOME": str(home)}
    ports = ["--api-port", str(api_port), "--dashboard-port", str(dashboard_port)]
    up = subprocess.Popen(
        [*UP, *ports, "--dashboard-host", "0.0.0.0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        printed = "".join(up.stdout.readline() for _ in range(4))
        assert "sign in with a token" in printed and "aipo token create" in printed
        assert _wait_http(f"http://127.0.0.1:{dashboard_port}/_stcore/health", 60) == 200
        (dashboard,) = [pid for pid in _children(up.pid) if b"streamlit" in _read(pid, "cmdline")]
        environ = dict(
            item.split(b"=", 1) for item in _read(dashboard, "environ").split(b"\0") if b"=" in item
        )
        assert environ[b"AIPO_DASHBOARD_AUTH"] == b"login"
        assert b"AIPO_API_TOKEN" not in environ and b"AIPO_HOME" not in environ
        assert b"0.0.0.0" in _read(dashboard, "cmdline")
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=30) == 0
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
        up.wait()


def _read(pid: int, name: str) -> bytes:
    return (Path("/proc") / str(pid) / name).read_bytes()


def _children(parent: int) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if (
                proc.name.isdigit()
                and int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent
            ):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def _umask(pid: int) -> int:
    line = next(line for line in _read(pid, "status").decode().splitlines() if line.startswith("Umask:"))
    return int(line.split()[1], 8)


def _service_pids(home: Path) -> dict[str, int]:
    """The service processes `up` started, from /proc (they lead their own process groups)."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if f"AIPO_HOME={home}".encode() not in environ or os.getpgid(int(proc.name)) != int(proc.name):
            continue
        for name, marker in (("api", "uvicorn"), ("worker-0", "celery"), ("dashboard", "streamlit")):
            if marker in cmdline:
                found[name] = int(proc.name)
    return found
