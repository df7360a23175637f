"""Benchmark: wall-clock and CPU time of the demo run, per stage, with the machine's load.

Runs `aipo run aipo_cli/configs/demo.yaml --local` in a child process under a given AIPO_HOME
(its built-in model cache is reused when present, so the one-off GGUF conversion is not timed
unless the folder is fresh), samples the 1-minute load average every 5 s while it runs, then
prints one Markdown table: each stage's seconds (from its `stage_{name}.json` summary), the whole
run's wall-clock time and the child's CPU time (user + sys, `resource.getrusage`). On a shared
machine the wall-clock time depends on the load; CPU time much less so.

    AIPO_HOME=/tmp/aipo-home-demo .venv/bin/python bench/demo_timing.py --run-id before
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

STAGES = ("self_instruct", "generate", "rank", "train", "evaluate")
CONFIG = Path(__file__).resolve().parents[1] / "aipo_cli" / "configs" / "demo.yaml"


def sample_load(stop: threading.Event, loads: list[float], every_s: float = 5.0) -> None:
    while not stop.wait(every_s):
        loads.append(os.getloadavg()[0])


def stage_seconds(run_dir: Path, iterations: int) -> dict[tuple[int, str], float]:
    seconds = {}
    for k in range(iterations):
        for stage in STAGES:
            marker = run_dir / f"iter_{k}" / f"stage_{stage}.json"
            if marker.is_file():
                seconds[(k, stage)] = float(json.loads(marker.read_text())["seconds"])
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-id", required=True, help="a fresh id: a finished run is not re-run")
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--config", type=Path, default=CONFIG, help="a variant of the demo config to time")
    args = parser.parse_args()
    home = Path(os.environ.get("AIPO_HOME", "~/.aipo")).expanduser()
    aipo = Path(sys.executable).with_name("aipo")
    loads: list[float] = [os.getloadavg()[0]]
    stop = threading.Event()
    sampler = threading.Thread(target=sample_load, args=(stop, loads), daemon=True)
    sampler.start()
    started = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    completed = subprocess.run(
        [str(aipo), "run", str(args.config), "--local", "--run-id", args.run_id], stdout=sys.stderr
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter() - started
    stop.set()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    seconds = stage_seconds(home / "runs" / args.run_id, args.iterations)
    print("| stage | " + " | ".join(f"iteration {k}" for k in range(args.iterations)) + " |")
    print("|---|" + "---:|" * args.iterations)
    for stage in STAGES:
        cells = [
            f"{seconds[(k, stage)]:.1f}" if (k, stage) in seconds else "–" for k in range(args.iterations)
        ]
        print(f"| {stage} | " + " | ".join(cells) + " |")
    print(f"\nwall-clock {wall:.1f} s ({wall / 60:.1f} min), CPU (user+sys) {cpu:.1f} s", end="")
    print(f", exit status {completed.returncode}")
    print(
        f"load average (1 min, sampled every 5 s): mean {sum(loads) / len(loads):.2f}, "
        f"max {max(loads):.2f}; {os.cpu_count()} CPUs"
    )
    return completed.returncode


if __name__ == "__main__":
    raise SystemExit(main())
