"""Benchmark: metric ingest rate of the AIPO API vs an MLflow tracking server, and history latency.

Both servers run as separate processes on this machine with a SQLite backend store, and receive
the same points over HTTP in batches of 1,000 (MLflow's `log-batch` limit): AIPO's
`POST /api/v1/runs/{id}/metrics` vs MLflow's `POST /api/2.0/mlflow/runs/log-batch` (the REST call
behind `MlflowClient.log_batch`). MLflow is installed into its own venv (default /tmp/mlflow-venv,
created on first use with `python3 -m venv` + `pip install mlflow`), never into the project's.

Then AIPO is filled to 1,000,000 points (20 keys × 50,000 steps, 10,000 points per request) and
the downsampled history of one key (500 points) is timed; optionally also one 1M-point series.

    .venv/bin/python bench/metrics_ingest.py                  # full run
    .venv/bin/python bench/metrics_ingest.py --points 20000 --history-points 200000   # quick
    .venv/bin/python bench/metrics_ingest.py --skip-ingest [--step-major]   # history only

Targets: AIPO ingest ≥ 5× MLflow's; downsampled history p50 ≤ 100 ms at 1M points.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
TOKEN = "bench-token"
BATCH = 1_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_mlflow_venv(venv: Path) -> Path:
    """The `mlflow` executable of a separate venv, installing it there if needed."""
    mlflow = venv / "bin" / "mlflow"
    if not mlflow.exists():
        python3 = shutil.which("python3") or sys.executable
        subprocess.run([python3, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "mlflow"], check=True)
    return mlflow


@contextmanager
def server(command: list[str], health_url: str, env: dict[str, str] | None = None) -> Iterator[None]:
    """Run a server process until the block ends; wait for its health URL first."""
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    proc = subprocess.Popen(command, cwd=REPO, env={**os.environ, **(env or {})}, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"{command[0]} exited: {log.read()[-2000:]}")
            try:
                if httpx.get(health_url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{health_url} not healthy after 180 s")
            time.sleep(0.5)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def make_points(n: int, keys: int = 10, *, step_major: bool = False) -> list[tuple[str, int, float]]:
    """n points over `keys` keys: key by key, or step by step (every key of a step, as training logs)."""
    steps = n // keys
    if step_major:
        return [(f"metric_{k}", s, (s % 97) / 97.0) for s in range(steps) for k in range(keys)]
    return [(f"metric_{k}", s, (s % 97) / 97.0) for k in range(keys) for s in range(steps)]


def batches(points: list, size: int) -> list[list]:
    return [points[i : i + size] for i in range(0, len(points), size)]


_local = threading.local()


def http() -> httpx.Client:
    """One keep-alive client per thread (building a client per request costs more than a request)."""
    if not hasattr(_local, "client"):
        _local.client = httpx.Client(timeout=300)
    return _local.client


def rate(send: Callable[[list], None], points: list, clients: int, size: int = BATCH) -> float:
    """Points per second to push `points` in batches of `size` from `clients` threads."""
    parts = batches(points, size)
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda _: http(), range(clients)))  # connect outside the timed part
        start = time.perf_counter()
        list(pool.map(send, parts))
    return len(points) / (time.perf_counter() - start)


def aipo_sender(base: str, run_id: int) -> Callable[[list], None]:
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def send(batch: list) -> None:
        body = {"points": [{"key": k, "step": s, "value": v, "stage": "client"} for k, s, v in batch]}
        httpx.post(
            f"{base}/api/v1/runs/{run_id}/metrics", json=body, headers=headers, timeout=300
        ).raise_for_status()

    return send


def aipo_new_run(base: str, name: str) -> int:
    config = {"name": name, "model": "tiny-random-llama", "iterations": 1}
    response = httpx.post(
        f"{base}/api/v1/runs", json=config, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
    )
    response.raise_for_status()
    return response.json()["id"]


def mlflow_sender(base: str) -> Callable[[list], None]:
    api = f"{base}/api/2.0/mlflow"
    experiment = httpx.post(f"{api}/experiments/create", json={"name": f"bench-{time.time_ns()}"}, timeout=60)
    experiment.raise_for_status()
    run = httpx.post(
        f"{api}/runs/create",
        json={"experiment_id": experiment.json()["experiment_id"], "start_time": int(time.time() * 1000)},
        timeout=60,
    )
    run.raise_for_status()
    run_id = run.json()["run"]["info"]["run_id"]
    now = int(time.time() * 1000)

    def send(batch: list) -> None:
        metrics = [{"key": k, "value": v, "timestamp": now, "step": s} for k, s, v in batch]
        httpx.post(
            f"{api}/runs/log-batch", json={"run_id": run_id, "metrics": metrics}, timeout=300
        ).raise_for_status()

    return send


def mlflow_rates(
    venv: Path, tmp: str, points: list, client_counts: list[int]
) -> tuple[str, dict[int, float]]:
    """MLflow's version and its ingest rate (pts/s) per number of clients; its server runs meanwhile."""
    mlflow = ensure_mlflow_venv(venv)
    version = subprocess.run([str(mlflow), "--version"], capture_output=True, text=True).stdout.strip()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [str(mlflow), "server", "--backend-store-uri", f"sqlite:///{tmp}/mlflow.db",
               "--default-artifact-root", f"{tmp}/mlartifacts", "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1"]  # fmt: skip
    rates = {}
    with server(command, f"{base}/health"):
        time.sleep(5)  # let MLflow finish its start-up work before timing
        for clients in client_counts:
            rates[clients] = rate(mlflow_sender(base), points, clients)
    return version, rates


def history_p50(base: str, run_id: int, key: str, points: int, repeats: int) -> tuple[float, float]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    url = f"{base}/api/v1/runs/{run_id}/metrics"
    samples = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        response = http().get(url, params={"key": key, "points": points}, headers=headers)
        elapsed = (time.perf_counter() - start) * 1000
        response.raise_for_status()
        assert len(response.json()["series"][0]["points"]) <= points
        if i:  # the first call warms caches
            samples.append(elapsed)
    samples.sort()
    return statistics.median(samples), samples[int(0.95 * (len(samples) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=50_000, help="points for the ingest comparison")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--history-points", type=int, default=1_000_000)
    parser.add_argument(
        "--single-series", action="store_true", help="also time one series of that many points"
    )
    parser.add_argument(
        "--step-major",
        action="store_true",
        help="fill the history run step by step (all keys of a step together), as a training run logs",
    )
    parser.add_argument("--skip-ingest", action="store_true", help="only the history part (no MLflow)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--mlflow-venv", type=Path, default=Path("/tmp/mlflow-venv"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    points = make_points(args.points)
    results: dict = {"points": len(points), "batch": BATCH, "ingest": []}
    with tempfile.TemporaryDirectory() as tmp:
        # One server at a time, so neither competes with the other's background work for the CPU.
        theirs: dict[int, float] = {}
        if not args.skip_ingest:
            results["mlflow"], theirs = mlflow_rates(args.mlflow_venv, tmp, points, args.clients)
        aipo_port = free_port()
        aipo = f"http://127.0.0.1:{aipo_port}"
        aipo_cmd = [sys.executable, "-m", "uvicorn", "backend.app:create_app", "--factory",
                    "--host", "127.0.0.1",
                    "--port", str(aipo_port), "--log-level", "warning"]  # fmt: skip
        aipo_env = {"AIPO_HOME": f"{tmp}/aipo", "AIPO_API_TOKEN": TOKEN}
        with server(aipo_cmd, f"{aipo}/health", aipo_env):
            for clients in theirs:
                ours = rate(aipo_sender(aipo, aipo_new_run(aipo, f"ingest-{clients}")), points, clients)
                row = {"clients": clients, "aipo_pts_s": round(ours), "mlflow_pts_s": round(theirs[clients]),
                       "speedup": round(ours / theirs[clients], 1)}  # fmt: skip
                results["ingest"].append(row)
                print(f"ingest, {clients} client(s), batches of {BATCH}: AIPO {ours:,.0f} pts/s, "
                      f"MLflow {row['mlflow_pts_s']:,} pts/s → {row['speedup']}×", flush=True)  # fmt: skip

            keys = 20
            fill = make_points(args.history_points, keys=keys, step_major=args.step_major)
            results["fill_order"] = "step-major" if args.step_major else "key-major"
            run_id = aipo_new_run(aipo, "history")
            fill_rate = rate(aipo_sender(aipo, run_id), fill, 1, size=10_000)
            results["fill_pts_s_10k_batches"] = round(fill_rate)
            print(f"filled {len(fill):,} points at {fill_rate:,.0f} pts/s (batches of 10,000)", flush=True)
            p50, p95 = history_p50(aipo, run_id, "metric_0", 500, args.repeats)
            results["history_1_of_20_keys"] = {"points_in_key": len(fill) // keys, "p50_ms": round(p50, 1),
                                               "p95_ms": round(p95, 1)}  # fmt: skip
            print(f"history of 1 key ({len(fill) // keys:,} of {len(fill):,} points) → 500 points: "
                  f"p50 {p50:.1f} ms, p95 {p95:.1f} ms", flush=True)  # fmt: skip
            if args.single_series:
                single = make_points(args.history_points, keys=1)
                single_run = aipo_new_run(aipo, "single-series")
                rate(aipo_sender(aipo, single_run), single, 1, size=10_000)
                p50s, p95s = history_p50(aipo, single_run, "metric_0", 500, args.repeats)
                results["history_single_series"] = {"points_in_key": len(single), "p50_ms": round(p50s, 1),
                                                    "p95_ms": round(p95s, 1)}  # fmt: skip
                print(f"history of 1 key with {len(single):,} points → 500 points: "
                      f"p50 {p50s:.1f} ms, p95 {p95s:.1f} ms", flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
