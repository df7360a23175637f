"""A real `uvicorn backend.app:create_app` process, its memory, and raw HTTP uploads of any size.

For tests that must observe what a request costs the server process itself (resident memory),
which an in-process TestClient cannot show: the client's buffers would be counted too.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LiveServer:
    host: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def rss_bytes(self) -> int:
        return _status_kib(self.process.pid, "VmRSS") * 1024


@contextmanager
def live_server(env: dict[str, str], log: Path, app: str = "backend.app:create_app") -> Iterator[LiveServer]:
    """uvicorn (h11, one worker) on a free local port with only `env`'s AIPO_* settings."""
    port = free_port()
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("AIPO_")} | env
    command = [sys.executable, "-m", "uvicorn", app, "--factory", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("ab") as out:
        process = subprocess.Popen(command, env=child_env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    server = LiveServer("127.0.0.1", port, process)
    try:
        _wait_healthy(server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_healthy(server: LiveServer, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {server.process.returncode}")
        try:
            if httpx.get(f"{server.url}/api/v1/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"uvicorn did not answer within {timeout_s:.0f} s")


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


@contextmanager
def peak_rss(server: LiveServer, every_s: float = 0.002) -> Iterator[dict[str, int]]:
    """Samples the server's resident memory while the block runs: {"before", "peak"} in bytes."""
    result = {"before": server.rss_bytes(), "peak": 0}
    result["peak"] = result["before"]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                result["peak"] = max(result["peak"], server.rss_bytes())
            except (OSError, KeyError):
                return
            time.sleep(every_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield result
    finally:
        done.set()
        sampler.join()
        result["peak"] = max(result["peak"], server.rss_bytes())


@dataclass
class RawResponse:
    status: int | None
    body: bytes
    sent: int  # body bytes the server accepted before answering or closing


def raw_post(
    server: LiveServer,
    path: str,
    body: Iterable[bytes],
    *,
    headers: dict[str, str],
    content_length: int | None,
    timeout_s: float = 60.0,
) -> RawResponse:
    """POST `body` chunk by chunk while reading the answer concurrently, as an impatient attacker
    would: the sender never waits for the server, the server may answer (and close) at any time.
    Without `content_length` the body is sent with chunked transfer encoding."""
    sock = socket.create_connection((server.host, server.port), timeout=timeout_s)
    lines = [f"POST {path} HTTP/1.1", f"Host: {server.host}", "Content-Type: application/json"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(
        f"Content-Length: {content_length}" if content_length is not None else "Transfer-Encoding: chunked"
    )
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    sent = 0

    def send_body() -> None:
        nonlocal sent
        try:
            for chunk in body:
                frame = chunk if content_length is not None else b"%x\r\n%s\r\n" % (len(chunk), chunk)
                sock.sendall(frame)
                sent += len(chunk)
            if content_length is None:
                sock.sendall(b"0\r\n\r\n")
        except OSError:  # the server answered and closed: stop sending
            pass

    sender = threading.Thread(target=send_body, daemon=True)
    sender.start()
    try:
        reader = sock.makefile("rb")
        status_line = reader.readline()
        status = int(status_line.split()[1]) if status_line else None
        length = 0
        while (line := reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        response_body = reader.read(length) if length else b""
    except OSError:
        status, response_body = None, b""
    finally:
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        sender.join(timeout=timeout_s)
    return RawResponse(status=status, body=response_body, sent=sent)
