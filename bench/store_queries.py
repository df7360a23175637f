"""Benchmark: is a 15-iteration × 20,000-pair run browsable on PostgreSQL?

Seeds one run with ITERATIONS × PAIRS pairs (synthetic texts with a realistic vocabulary), a
metric history and EVAL_SAMPLES judged answers per evaluation (θ_0 and every iteration's policy),
then times the API requests the dashboard makes (in-process ASGI, so the figures include
validation, SQL and JSON serialisation): paginated pair pages with filters, deep keyset pages,
text search, counts, downsampled metric history, and the iterations summary (which length-controls
every stored evaluation at read time, docs/evaluation.md). Reports p50/p95.

    .venv/bin/python bench/store_queries.py            # temporary database on the local server
    .venv/bin/python bench/store_queries.py --iterations 2 --pairs 2000 --repeats 5   # quick
    .venv/bin/python bench/store_queries.py --pairs 0 --only "metric history"   # metrics only
    .venv/bin/python bench/store_queries.py --pairs 0 --steps 1 --only "iterations"   # eval summary

Target: every query p95 ≤ 300 ms. Not a timed test.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aipo_core.config import RunConfig  # noqa: E402
from backend.app import create_app  # noqa: E402
from backend.db import dispose_engines, get_sessionmaker  # noqa: E402
from backend.evaluations import _cache as evaluations_cache  # noqa: E402
from backend.migrate import upgrade  # noqa: E402
from backend.settings import Settings  # noqa: E402
from backend.store import eval_samples, metrics, pairs, runs  # noqa: E402

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
RARE_WORD = "zanzibarite"
TRGM_COLUMNS = ("prompt_text", "chosen_text", "rejected_text")
TOKEN = "bench-token"


def vocabulary(rng: random.Random, size: int = 6000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(2, 10))) for _ in range(size)]


def sentence(rng: random.Random, words: list[str], n: int) -> str:
    return " ".join(rng.choice(words) for _ in range(n))


def pair_records(rng: random.Random, words: list[str], n: int) -> list[dict]:
    records = []
    for i in range(n):
        prompt = sentence(rng, words, rng.randint(10, 40))
        if rng.random() < 0.001:
            prompt += f" {RARE_WORD}"
        chosen_len, rejected_len = rng.randint(20, 160), rng.randint(20, 160)
        ref_c, ref_r = -rng.uniform(20, 200), -rng.uniform(20, 200)
        records.append(
            {
                "id": f"p{i}",
                "prompt": [{"role": "user", "content": prompt}],
                "chosen": [{"role": "assistant", "content": sentence(rng, words, chosen_len)}],
                "rejected": [{"role": "assistant", "content": sentence(rng, words, rejected_len)}],
                "score_chosen": rng.random(),
                "score_rejected": rng.random(),
                "chosen_length": chosen_len,
                "rejected_length": rejected_len,
                "chosen_chars": chosen_len * 6,
                "rejected_chars": rejected_len * 6,
                "ref_chosen_logps": ref_c,
                "ref_rejected_logps": ref_r,
                "s_ref": ref_c - ref_r,
            }
        )
    return records


def eval_records(rng: random.Random, n: int, strength: float) -> list[dict]:
    """n judged answers against AlpacaEval-like baselines; the judge prefers longer answers."""
    records = []
    for i in range(n):
        baseline_chars = rng.randint(300, 4000)
        output_chars = int(baseline_chars * rng.lognormvariate(-0.3, 0.5))
        length = math.tanh((output_chars - baseline_chars) / 1500)
        p_win = 1 / (1 + math.exp(-(strength + 1.5 * length)))
        records.append(
            {
                "id": str(i),
                "instruction": f"instruction {i}",
                "output": "o",
                "baseline_output": "b",
                "preference": 1.0 + p_win,
                "output_chars": output_chars,
                "baseline_chars": baseline_chars,
                "output_tokens": output_chars // 4,
            }
        )
    return records


def seed_evaluations(url: str, run_id: int, iterations: int, n: int) -> None:
    """θ_0 (iteration 0, evaluated="base") and θ_1 … θ_K, n prompts each, as the worker stores them."""
    rng = random.Random(1)
    with get_sessionmaker(url)() as session:
        eval_samples.replace_eval_samples(
            session, run_id, 0, "alpaca_eval", eval_records(rng, n, -1.0), evaluated="base"
        )
        for k in range(iterations):
            eval_samples.replace_eval_samples(
                session, run_id, k, "alpaca_eval", eval_records(rng, n, -1.0 + 0.1 * k)
            )
        session.commit()


def seed(url: str, iterations: int, n_pairs: int, steps: int) -> int:
    rng = random.Random(0)
    words = vocabulary(rng)
    make_session = get_sessionmaker(url)
    config = RunConfig(name="bench", model="tiny-random-llama", iterations=iterations)
    with make_session() as session:
        run_id = runs.create_run(session, config).id
        session.commit()
    start = time.perf_counter()
    # Bulk load: build the trigram indexes once at the end instead of maintaining them per row
    # (what is measured below are the queries, not the load).
    engine = create_engine(url)
    with engine.begin() as connection:
        for column in TRGM_COLUMNS:
            connection.execute(text(f"DROP INDEX ix_pairs_{column}_trgm"))
    for k in range(iterations if n_pairs else 0):
        with make_session() as session:
            pairs.replace_pairs(session, run_id, k, pair_records(rng, words, n_pairs))
            session.commit()
        print(f"  iteration {k}: {n_pairs} pairs stored ({time.perf_counter() - start:.0f} s)", flush=True)
    keys = ["loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen"]
    with make_session() as session:
        for k in range(iterations):
            batch = [
                {"iteration": k, "stage": "train", "key": key, "step": s, "value": rng.gauss(0, 1)}
                for key in keys
                for s in range(steps)
            ]
            metrics.ingest_metrics(session, run_id, batch)
        session.commit()
    with engine.begin() as connection:
        for column in TRGM_COLUMNS:
            connection.execute(
                text(f"CREATE INDEX ix_pairs_{column}_trgm ON pairs USING gin ({column} gin_trgm_ops)")
            )
        connection.execute(text("ANALYZE"))
    engine.dispose()
    print(f"  indexes built ({time.perf_counter() - start:.0f} s)", flush=True)
    return run_id


def timed(
    client: TestClient, url: str, params: dict, repeats: int, before: Callable[[], None] = lambda: None
) -> tuple[float, float, dict]:
    samples, body = [], {}
    for _ in range(repeats):
        before()
        t0 = time.perf_counter()
        response = client.get(url, params=params)
        samples.append((time.perf_counter() - t0) * 1000)
        response.raise_for_status()
        body = response.json()
    samples.sort()
    p95 = samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))]
    return statistics.median(samples), p95, body


def queries(run_id: int, iterations: int, n_pairs: int) -> list[tuple[str, str, dict]]:
    base = f"/api/v1/runs/{run_id}"
    last = iterations - 1
    deep = f"{last}:{n_pairs // 2}"
    return [
        ("pairs: first page (50)", f"{base}/pairs", {"limit": 50}),
        ("pairs: deep keyset page (last iteration, middle)", f"{base}/pairs", {"limit": 50, "cursor": deep}),
        ("pairs: iteration + disagree", f"{base}/pairs", {"iteration": last, "agreement": "disagree"}),
        ("pairs: length diff 50..200", f"{base}/pairs", {"min_length_diff": 50, "max_length_diff": 200}),
        ("pairs: iteration + length diff + agree", f"{base}/pairs",
         {"iteration": 7 % iterations, "min_length_diff": -10, "max_length_diff": 10, "agreement": "agree"}),
        ("pairs: text search, rare word (whole run)", f"{base}/pairs", {"q": RARE_WORD}),
        ("pairs: text search, rare word + iteration", f"{base}/pairs", {"q": RARE_WORD, "iteration": last}),
        ("pairs: page + total (iteration)", f"{base}/pairs", {"iteration": last, "include_total": True}),
        ("pairs: total count, disagree (whole run)", f"{base}/pairs",
         {"agreement": "disagree", "include_total": True, "limit": 1}),
        ("metric history: 1 key, 500 points", f"{base}/metrics", {"key": "loss", "points": 500}),
        ("metric history: 1 key, 1 iteration", f"{base}/metrics", {"key": "loss", "iteration": last}),
        ("metric history: all 5 keys, 200 points", f"{base}/metrics", {"points": 200}),
        ("iterations summary", f"{base}/iterations", {}),
        ("iterations summary, cold (LC refitted)", f"{base}/iterations", {}),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--admin-url", default=ADMIN_URL, help="PostgreSQL server to create the bench database on"
    )
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--pairs", type=int, default=20_000)
    parser.add_argument("--steps", type=int, default=2_000, help="train steps per iteration per metric key")
    parser.add_argument(
        "--eval-samples", type=int, default=805, help="judged prompts per evaluation (θ_0 and each iteration)"
    )
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument(
        "--only", help="time only the queries whose label starts with this, e.g. 'metric history'"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    name = f"aipo_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(args.admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(args.admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        print(f"seeding {args.iterations} × {args.pairs} pairs into {name} …", flush=True)
        run_id = seed(url, args.iterations, args.pairs, args.steps)
        seed_evaluations(url, run_id, args.iterations, args.eval_samples)
        with tempfile.TemporaryDirectory() as home:
            settings = Settings(home=Path(home), database_url=url, api_token=TOKEN)
            with TestClient(create_app(settings), headers={"Authorization": f"Bearer {TOKEN}"}) as client:
                results = []
                print("\n| query | p50 ms | p95 ms | rows |\n|---|---:|---:|---:|")
                for label, path, params in queries(run_id, args.iterations, args.pairs):
                    if args.only and not label.startswith(args.only):
                        continue
                    client.get(path, params=params)  # warm the plan and the cache
                    # "cold": the first read after an evaluation was stored (no cached summary)
                    before = evaluations_cache.clear if label.endswith("(LC refitted)") else lambda: None
                    p50, p95, body = timed(client, path, params, args.repeats, before)
                    rows = len(body.get("items", body.get("series", [])))
                    results.append(
                        {"query": label, "p50_ms": round(p50, 1), "p95_ms": round(p95, 1), "rows": rows}
                    )
                    print(f"| {label} | {p50:.1f} | {p95:.1f} | {rows} |", flush=True)
        worst = max(r["p95_ms"] for r in results)
        print(f"\nworst p95: {worst:.1f} ms (target ≤ 300 ms) → {'PASS' if worst <= 300 else 'FAIL'}")
        if args.json:
            args.json.write_text(
                json.dumps({"args": vars(args) | {"json": str(args.json)}, "results": results}, indent=2)
            )
    finally:
        dispose_engines()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
