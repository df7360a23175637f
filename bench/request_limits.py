"""Benchmark: what a hostile request costs the API, ours vs the usual FastAPI pattern.

1. A 200 MB POST /runs without a token, sent without waiting for the server (Content-Length
   declared, and chunked). Ours: the access layer answers 401 from the headers. Peer: the same
   route with the token checked in a FastAPI dependency and no body limit (the pattern of the
   FastAPI tutorial, and AIPO before this change): FastAPI reads and parses the body first.
   Both run as real uvicorn processes; the figure is the growth of the server's resident memory.
2. A sweep grid of 4 keys × 64 values (16.8 M points; the limit is 256). Ours: refused by
   arithmetic. Peer: building the cartesian product and counting it (AIPO before this change),
   measured on 3 × 64 values (262,144 points) unless --full-peer (4 × 64: ~30 s and ~4 GB).

    .venv/bin/python bench/request_limits.py [--mib 200] [--full-peer]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI, Header, HTTPException

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend.schemas import RunCreate  # noqa: E402
from tests.backend.live_server import MIB, live_server, peak_rss, raw_post  # noqa: E402

TOKEN = "bench-token"


def peer_app() -> FastAPI:
    """POST /api/v1/runs with the token checked in a dependency and no body limit."""

    def require_token(authorization: Annotated[str | None, Header()] = None) -> None:
        if authorization != f"Bearer {TOKEN}":
            raise HTTPException(401, "missing or invalid bearer token")

    app = FastAPI()

    @app.get("/api/v1/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/api/v1/runs", dependencies=[Depends(require_token)])
    def create_run(body: RunCreate) -> dict[str, Any]:
        return {"name": body.name}

    return app


def _junk(total: int, chunk: int = MIB):  # noqa: ANN202
    """`total` bytes of valid JSON, {"name": "xxx…"}, so the peer's parser accepts and holds it."""
    head, tail = b'{"name": "', b'"}'
    yield head
    block = b"x" * chunk
    for _ in range((total - len(head) - len(tail)) // chunk):
        yield block
    yield b"x" * ((total - len(head) - len(tail)) % chunk) + tail


def measure_post(
    app: str, env: dict[str, str], total: int, declared: bool, workdir: Path
) -> dict[str, float]:
    with live_server(env, workdir / "server.log", app=app) as server:
        raw_post(server, "/api/v1/runs", [b"{}"], headers={}, content_length=2)  # warm up
        start = time.perf_counter()
        with peak_rss(server) as rss:
            response = raw_post(
                server, "/api/v1/runs", _junk(total), headers={}, content_length=total if declared else None,
                timeout_s=600,
            )  # fmt: skip
        seconds = time.perf_counter() - start
    return {
        "status": response.status or 0,
        "seconds": seconds,
        "grew_mib": (rss["peak"] - rss["before"]) / MIB,
        "sent_mib": response.sent / MIB,
    }


def old_expand_grid(grid: dict[str, list[Any]], limit: int = 256) -> None:
    """The pre-change check: build every point, then count."""
    keys = list(grid)
    points = [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]
    if len(points) > limit:
        raise ValueError(f"grid: {len(points)} points exceed the limit of {limit}")


def measure_grid(check: Any, grid: dict[str, list[Any]]) -> dict[str, float]:
    tracemalloc.start()
    start = time.perf_counter()
    try:
        check(grid)
    except ValueError:
        pass
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"seconds": seconds, "peak_mib": peak / MIB}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mib", type=int, default=200, help="Size of the unauthenticated POST.")
    parser.add_argument("--full-peer", action="store_true", help="Run the peer grid at 4 × 64 too.")
    args = parser.parse_args()
    total = args.mib * MIB

    print(f"1. {args.mib} MB POST /api/v1/runs without a token (server RSS growth, uvicorn h11)")
    print(f"   {'server':<34} {'body':<15} {'status':>6} {'time s':>8} {'RSS +MiB':>9} {'accepted MiB':>13}")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ours_env = {"AIPO_HOME": str(work / "aipo"), "AIPO_API_TOKEN": TOKEN}
        peer_env = {"PYTHONPATH": str(REPO / "bench")}
        for declared in (True, False):
            body = "Content-Length" if declared else "chunked"
            for label, app, env in (
                ("ours (access layer)", "backend.app:create_app", ours_env),
                ("peer (dependency, no limit)", "request_limits:peer_app", peer_env),
            ):
                row = measure_post(app, env, total, declared, work)
                rows[(label, body)] = row
                print(
                    f"   {label:<34} {body:<15} {row['status']:>6.0f} {row['seconds']:>8.2f} "
                    f"{row['grew_mib']:>9.1f} {row['sent_mib']:>13.0f}"
                )
    for body in ("Content-Length", "chunked"):
        ours, peer = rows[("ours (access layer)", body)], rows[("peer (dependency, no limit)", body)]
        print(f"   {body}: peer grew {peer['grew_mib']:.0f} MiB, ours {ours['grew_mib']:.1f} MiB")

    from backend.store.sweeps import grid_size

    print("\n2. Sweep grid check (time, tracemalloc peak)")
    values = [i / 1000 for i in range(64)]
    big = {f"k{i}": values for i in range(4)}
    peer_grid = big if args.full_peer else {f"k{i}": values for i in range(3)}
    ours = measure_grid(grid_size, big)
    peer = measure_grid(old_expand_grid, peer_grid)
    shape = " × ".join(str(len(v)) for v in peer_grid.values())
    print(f"   ours  grid_size, 4 × 64 (16,777,216 points): "
          f"{ours['seconds'] * 1e6:8.1f} µs, {ours['peak_mib']:.3f} MiB")  # fmt: skip
    print(f"   peer  build + count, {shape} ({len(values) ** len(peer_grid):,} points): "
          f"{peer['seconds']:8.2f} s,  {peer['peak_mib']:.0f} MiB")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = {"AIPO_HOME": str(work / "aipo"), "AIPO_API_TOKEN": TOKEN}
        with live_server(env, work / "server.log") as server:
            http = httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120
            )
            config = {"name": "huge", "model": "tiny-random-llama", "iterations": 1}
            body = {
                "name": "huge",
                "base_config": config,
                "grid": {**{f"objective.k{i}": values for i in range(3)}, "seed": list(range(64))},
            }
            http.post("/api/v1/sweeps", json={**body, "grid": {"seed": [1]}})  # warm up
            start = time.perf_counter()
            with peak_rss(server) as rss:
                response = http.post("/api/v1/sweeps", json=body)
            seconds = time.perf_counter() - start
    detail = response.json()["detail"][0]
    print(f"   POST /api/v1/sweeps 4 × 64 to a live server: HTTP {response.status_code} at "
          f"{'.'.join(map(str, detail['loc']))} in {seconds * 1000:.0f} ms, "
          f"server RSS +{(rss['peak'] - rss['before']) / MIB:.1f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
