"""`aipo up` for real: API, worker and dashboard processes start, answer, and stop together."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from aipo_cli.services import DASHBOARD_APP
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
        up.send_signal(stop_signal)
        assert up.wait(timeout=30) == 0
        assert not [name for name, pid in children.items() if _alive(pid)]
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
        up.wait()


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
