"""A stand-in for the AIPO API, for dashboard tests only: canned data behind real HTTP.

Routes follow docs/architecture.md §9 and answer through the backend's own response models
(`backend.schemas`), so a schema change in the backend makes these tests fail instead of
letting the dashboard drift. The data is small and hand-made: six runs (one finished AIPO
run, one running DPO run, a 2×2 alpha × lambda_ sweep), stages, metrics, pairs, eval samples.
Writes (launch, cancel, resume, clone) change the in-memory state the way the backend would.

The end-to-end test against the real backend is the lead's; this only isolates the dashboard.
"""

from __future__ import annotations

import copy
import itertools
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query
from fastapi.responses import PlainTextResponse, Response

from aipo_core.config import RunConfig
from backend import schemas
from backend.preview import run_preview, sweep_preview
from backend.settings import Settings
from backend.store.sweeps import child_configs

T0 = "2025-01-01T12:00:00Z"
STAGES = ("self_instruct", "generate", "rank", "train", "evaluate")
BASE_CONFIG = copy.deepcopy(schemas.EXAMPLE_CONFIG)


def _config(name: str, objective: dict[str, Any]) -> dict[str, Any]:
    return {**copy.deepcopy(BASE_CONFIG), "name": name, "objective": objective}


def _run(run_id: int, name: str, status: str, objective: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "id": run_id,
        "name": name,
        "objective": objective["name"],
        "status": status,
        "config": _config(name, objective),
        "error": None,
        "created_at": T0,
        "updated_at": T0,
        "launched_at": T0,
        "started_at": T0,
        "finished_at": T0 if status == "succeeded" else None,
        "sweep_id": None,
        "sweep_point": None,
        "parent_run_id": None,
        "created_by": "operator",
        "progress": None,
        **extra,
    }


def _stages(run_id: int, first_id: int, done: int, running: str | None = None) -> list[dict[str, Any]]:
    """2 iterations × 5 stages; the first `done` succeeded, the next one `running` if given."""
    stages = []
    for position in range(2 * len(STAGES)):
        status = (
            "succeeded" if position < done else ("running" if position == done and running else "pending")
        )
        stages.append(
            {
                "id": first_id + position,
                "run_id": run_id,
                "iteration": position // len(STAGES),
                "name": STAGES[position % len(STAGES)],
                "position": position,
                "queue": "gpu",
                "status": status,
                "attempt": 1 if status != "pending" else 0,
                "progress": 1.0 if status == "succeeded" else (0.4 if status == "running" else 0.0),
                "message": running if status == "running" else None,
                "heartbeat_at": None,
                "task_id": None,
                "artifact_path": None,
                "log_path": None,
                "error": None,
                "queued_at": None,
                "started_at": T0 if status != "pending" else None,
                "finished_at": T0 if status == "succeeded" else None,
            }
        )
    return stages


def _eval(win: float, lc: float, length: float) -> dict[str, float]:
    return {
        "alpaca_eval/win_rate": win,
        "alpaca_eval/lc_win_rate": lc,
        "alpaca_eval/avg_length": length,
        "alpaca_eval/win_rate_se": 1.5,
        "alpaca_eval/n": 32.0,
    }


# (prompt, chosen, rejected, s_ref) — iteration 0 gets the first four, iteration 1 the rest.
PAIR_TEXTS = [
    ("Name three primes.", "2, 3 and 5.", "4, 6, 8.", 3.5),
    (
        "Explain photosynthesis briefly.",
        "Plants turn light, water and CO2 into sugar and oxygen.",
        "Plants eat.",
        6.0,
    ),
    (
        "Write a haiku about rain.",
        "Soft rain on tin roofs / the garden drinks slowly / puddles hold the sky",
        "Rain is wet and falls from clouds, which are in the sky above us.",
        -2.0,
    ),
    ("What is 12 * 12?", "144.", "12 times 12 is 124.", 1.25),
    ("Give a synonym for happy.", "Joyful.", "Sad.", -0.5),
    (
        "Summarise the water cycle.",
        "Evaporation, condensation, precipitation, collection.",
        "Water moves.",
        4.0,
    ),
]


def _pairs(run_id: int) -> list[dict[str, Any]]:
    pairs = []
    for n, (prompt, chosen, rejected, s_ref) in enumerate(PAIR_TEXTS):
        iteration, idx = (0, n) if n < 4 else (1, n - 4)
        chosen_len, rejected_len = len(chosen.split()) + 2, len(rejected.split()) + 2
        ref_rejected = -2.0 * rejected_len
        pairs.append(
            {
                "id": 100 * run_id + n,
                "iteration": iteration,
                "idx": idx,
                "uid": f"p-{n}",
                "prompt": [{"role": "user", "content": prompt}],
                "prompt_text": prompt,
                "chosen": chosen,
                "rejected": rejected,
                "score_chosen": 0.9,
                "score_rejected": 0.1,
                "chosen_length": chosen_len,
                "rejected_length": rejected_len,
                "chosen_chars": len(chosen),
                "rejected_chars": len(rejected),
                "ref_chosen_logps": ref_rejected + s_ref,
                "ref_rejected_logps": ref_rejected,
                "s_ref": s_ref,
                "length_diff": chosen_len - rejected_len,
                "extra": None,
            }
        )
    return pairs


def _train_metrics(iteration: int, steps: int = 10) -> dict[str, list[dict[str, Any]]]:
    """Train-stage series: chosen rewards rise, rejected fall, loss falls from log 2."""
    series: dict[str, list[dict[str, Any]]] = {}
    for step in range(1, steps + 1):
        values = {
            "loss": 0.693 - 0.02 * step - 0.05 * iteration,
            "rewards_chosen": 0.01 * step,
            "rewards_rejected": -0.02 * step,
            "margins": 0.03 * step,
            "accuracy": 0.5 + 0.04 * step,
            "gradient_weight_mean": 0.5 - 0.01 * step,
        }
        for key, value in values.items():
            series.setdefault(key, []).append(
                {
                    "iteration": iteration,
                    "stage": "train",
                    "attempt": 1,
                    "step": step,
                    "value": value,
                    "min": value,
                    "max": value,
                    "count": 1,
                }
            )
    return series


@dataclass
class StandInData:
    """The stand-in's state; tests may edit it before starting the server."""

    runs: dict[int, dict[str, Any]] = field(default_factory=dict)
    stages: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    iterations: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    metrics: dict[int, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    pairs: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    samples: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    sweeps: dict[int, dict[str, Any]] = field(default_factory=dict)
    created: list[dict[str, Any]] = field(default_factory=list)  # bodies of POST /runs, for assertions
    idempotency_keys: list[str | None] = field(default_factory=list)  # headers of POST /runs and /sweeps

    def add_run(
        self, run: dict[str, Any], evals: list[dict[str, float]], stages_done: int, running: str | None = None
    ) -> None:
        run_id = run["id"]
        self.runs[run_id] = run
        self.stages[run_id] = _stages(run_id, 100 * run_id, stages_done, running)
        self.iterations[run_id] = [
            {
                "index": k,
                "status": "succeeded" if k < len(evals) else "running",
                "started_at": T0,
                "finished_at": T0 if k < len(evals) else None,
                "stages": {s["name"]: s["status"] for s in self.stages[run_id] if s["iteration"] == k},
                "eval_metrics": evals[k] if k < len(evals) else {},
                "pair_stats": {
                    "pairs": 4,
                    "agreement_rate": 0.75,
                    "mean_s_ref": 2.2,
                    "mean_chosen_length": 8.0,
                    "mean_rejected_length": 6.0,
                },
            }
            for k in range(2)
        ]
        self.metrics[run_id] = {}
        for k in range(2 if stages_done > 8 else 1):
            for key, points in _train_metrics(k).items():
                self.metrics[run_id].setdefault(key, []).extend(points)
        self.pairs[run_id] = _pairs(run_id)
        self.samples[run_id] = [
            {
                "id": 10 * run_id + i,
                "iteration": 0,
                "benchmark": "alpaca_eval",
                "idx": i,
                "uid": str(i),
                "instruction": f"Instruction {i}",
                "output": f"Model answer {i}",
                "baseline_output": "GPT-4 answer",
                "preference": 1.0 + (i % 2),
                "output_chars": 14,
                "baseline_chars": 12,
                "output_tokens": 4,
                "extra": None,
            }
            for i in range(3)
        ]

    def next_id(self) -> int:
        return max(self.runs, default=0) + 1


def canned_data() -> StandInData:
    """Six runs: a finished AIPO run, a running DPO run and a 2×2 sweep (alpha × lambda_)."""
    data = StandInData()
    data.add_run(
        _run(1, "aipo-smollm2", "succeeded", {"name": "aipo", "beta": 0.1, "alpha": 0.05, "lambda_": 0.2}),
        [_eval(10.0, 12.0, 900.0), _eval(15.0, 18.0, 1100.0)],
        stages_done=10,
    )
    running = _run(
        2,
        "dpo-baseline",
        "running",
        {"name": "dpo", "beta": 0.1},
        progress={
            "stages_done": 8,
            "stages_total": 10,
            "fraction": 0.8,
            "current_stage": "train",
            "current_iteration": 1,
        },
    )
    data.add_run(running, [_eval(11.0, 11.5, 1000.0)], stages_done=8, running="step 4/10")
    points = [(0.03, 0.2, 14.0), (0.03, 0.5, 16.0), (0.05, 0.2, 15.0), (0.05, 0.5, 19.0)]
    for n, (alpha, lam, lc) in enumerate(points):
        run = _run(
            3 + n,
            f"aipo-grid-{n}",
            "succeeded",
            {"name": "aipo", "beta": 0.1, "alpha": alpha, "lambda_": lam},
            sweep_id=1,
            sweep_point={"objective.alpha": alpha, "objective.lambda_": lam},
        )
        data.add_run(run, [_eval(lc - 3, lc - 2, 950.0), _eval(lc - 1, lc, 1000.0)], stages_done=10)
    data.sweeps[1] = {
        "id": 1,
        "name": "aipo-grid",
        "base_config": _config("aipo-grid", {"name": "aipo"}),
        "grid": {"objective.alpha": [0.03, 0.05], "objective.lambda_": [0.2, 0.5]},
        "max_concurrent": 2,
        "created_at": T0,
        "status_counts": {"succeeded": 4},
    }
    return data


# ----------------------------------------------------------------------------- the app


def create_app(token: str, data: StandInData) -> FastAPI:
    """The stand-in API; every /api/v1 route but /health needs `Authorization: Bearer <token>`."""

    def require_token(authorization: Annotated[str | None, Header()] = None) -> None:
        if authorization != f"Bearer {token}":
            raise HTTPException(401, "missing or invalid bearer token")

    def run_or_404(run_id: int) -> dict[str, Any]:
        if run_id not in data.runs:
            raise HTTPException(404, f"run {run_id} not found")
        return data.runs[run_id]

    app = FastAPI()
    open_router = APIRouter(prefix="/api/v1")
    api = APIRouter(prefix="/api/v1", dependencies=[Depends(require_token)])

    @open_router.get("/health", response_model=schemas.HealthPublic)
    def health() -> dict[str, str]:
        return {"status": "ok", "database": "ok"}

    @api.get("/me", response_model=schemas.PrincipalPublic)
    def me() -> dict[str, Any]:
        return {"name": "operator", "scope": "write", "operator": True}

    @api.get("/runs", response_model=schemas.RunList)
    def list_runs(
        status: str | None = None,
        objective: str | None = None,
        name: str | None = None,
        sweep_id: int | None = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        offset: int = 0,
    ) -> dict[str, Any]:
        runs = sorted(data.runs.values(), key=lambda r: -r["id"])
        runs = [
            r
            for r in runs
            if (status is None or r["status"] == status)
            and (objective is None or r["objective"] == objective)
            and (name is None or name.lower() in r["name"].lower())
            and (sweep_id is None or r["sweep_id"] == sweep_id)
        ]
        return {"items": runs[offset : offset + limit], "total": len(runs), "limit": limit, "offset": offset}

    # Previews are the real backend's (they are pure: no store, no broker).
    preview_settings = Settings(home=Path(tempfile.gettempdir()) / "aipo-stand-in", api_token=token)

    @api.post("/runs/preview", response_model=schemas.RunPreviewPublic)
    def preview_run(body: schemas.RunCreate) -> schemas.RunPreviewPublic:
        config = RunConfig.model_validate(body.model_dump(exclude_unset=True))
        return run_preview(config, preview_settings, active_runs=len(data.runs))

    @api.post("/sweeps/preview", response_model=schemas.SweepPreviewPublic)
    def preview_sweep(body: schemas.SweepCreate) -> schemas.SweepPreviewPublic:
        base = RunConfig.model_validate(body.base_config.model_dump(exclude_unset=True))
        children = child_configs(base, body.grid)
        return sweep_preview(
            body.name, children, max_concurrent=body.max_concurrent, settings=preview_settings, active_runs=0
        )

    @api.post("/runs", status_code=201, response_model=schemas.RunPublic)
    def create_run(
        body: schemas.RunCreate, key: Annotated[str | None, Header(alias="Idempotency-Key")] = None
    ) -> dict[str, Any]:
        data.idempotency_keys.append(key)
        config = body.model_dump(mode="json", exclude_unset=True)
        data.created.append(config)
        run = _run(data.next_id(), body.name, "queued", config.get("objective", {"name": "aipo"}))
        data.runs[run["id"]] = {**run, "config": config}
        return data.runs[run["id"]]

    @api.get("/runs/{run_id}", response_model=schemas.RunPublic)
    def get_run(run_id: int) -> dict[str, Any]:
        return run_or_404(run_id)

    @api.post("/runs/{run_id}/cancel", response_model=schemas.RunPublic)
    def cancel(run_id: int) -> dict[str, Any]:
        run = run_or_404(run_id)
        if run["status"] in ("succeeded", "failed"):
            raise HTTPException(409, f"run {run_id} is {run['status']}")
        run["status"] = "cancelled"
        return run

    @api.post("/runs/{run_id}/resume", response_model=schemas.RunPublic)
    def resume(run_id: int) -> dict[str, Any]:
        run = run_or_404(run_id)
        if run["status"] not in ("failed", "cancelled"):
            raise HTTPException(409, f"run {run_id} is {run['status']}; only failed or cancelled runs resume")
        run["status"] = "queued"
        return run

    @api.post("/runs/{run_id}/clone", status_code=201, response_model=schemas.RunPublic)
    def clone(run_id: int, body: schemas.RunClone) -> dict[str, Any]:
        parent = run_or_404(run_id)
        clone = {
            **copy.deepcopy(parent),
            "id": data.next_id(),
            "name": f"{parent['name']} (clone)",
            "status": "queued",
            "parent_run_id": run_id,
        }
        data.runs[clone["id"]] = clone
        return clone

    @api.get("/runs/{run_id}/iterations", response_model=schemas.IterationList)
    def iterations(run_id: int) -> dict[str, Any]:
        run_or_404(run_id)
        return {"items": data.iterations.get(run_id, [])}

    @api.get("/runs/{run_id}/stages", response_model=schemas.StageList)
    def stages(run_id: int) -> dict[str, Any]:
        run_or_404(run_id)
        return {"items": data.stages.get(run_id, [])}

    @api.get("/runs/{run_id}/stages/{stage_id}/log", response_class=PlainTextResponse)
    def stage_log(run_id: int, stage_id: int, tail_bytes: int = 65536) -> str:
        run_or_404(run_id)
        stage = next((s for s in data.stages.get(run_id, []) if s["id"] == stage_id), None)
        if stage is None or stage["status"] == "pending":
            raise HTTPException(404, f"log of stage {stage_id}")
        return f"[{stage['name']}] started\n[{stage['name']}] step 1/10 loss=0.693\n"[-tail_bytes:]

    @api.get("/runs/{run_id}/metrics/keys", response_model=schemas.MetricKeyList)
    def metric_keys(run_id: int) -> dict[str, Any]:
        run_or_404(run_id)
        return {
            "items": [{"key": k, "count": len(v)} for k, v in sorted(data.metrics.get(run_id, {}).items())]
        }

    @api.get("/runs/{run_id}/metrics", response_model=schemas.MetricHistory)
    def metric_history(
        run_id: int,
        key: Annotated[list[str] | None, Query()] = None,
        points: Annotated[int, Query(ge=2, le=10_000)] = 500,
        iteration: int | None = None,
        stage: str | None = None,
    ) -> dict[str, Any]:
        run_or_404(run_id)
        stored = data.metrics.get(run_id, {})
        series = []
        for name in key or sorted(stored):
            rows = [
                p
                for p in stored.get(name, [])
                if (iteration is None or p["iteration"] == iteration)
                and (stage is None or p["stage"] == stage)
            ]
            series.append({"key": name, "total": len(rows), "points": rows[:points]})
        return {"series": series}

    def matching_pairs(
        run_id: int,
        iteration: int | None,
        agreement: str | None,
        min_length_diff: int | None,
        max_length_diff: int | None,
        q: str | None,
    ) -> list[dict[str, Any]]:
        def keep(p: dict[str, Any]) -> bool:
            return (
                (iteration is None or p["iteration"] == iteration)
                and (agreement != "agree" or p["s_ref"] > 0)
                and (agreement != "disagree" or p["s_ref"] <= 0)
                and (min_length_diff is None or p["length_diff"] >= min_length_diff)
                and (max_length_diff is None or p["length_diff"] <= max_length_diff)
                and (not q or any(q.lower() in p[f].lower() for f in ("prompt_text", "chosen", "rejected")))
            )

        return [p for p in data.pairs.get(run_id, []) if keep(p)]

    @api.get("/runs/{run_id}/pairs", response_model=schemas.PairPage)
    def pairs(
        run_id: int,
        iteration: int | None = None,
        agreement: str | None = None,
        min_length_diff: int | None = None,
        max_length_diff: int | None = None,
        q: str | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: str | None = None,
        include_total: bool = False,
    ) -> dict[str, Any]:
        run_or_404(run_id)
        rows = matching_pairs(run_id, iteration, agreement, min_length_diff, max_length_diff, q)
        if cursor:
            after = tuple(int(p) for p in cursor.split(":"))
            rows_after = [p for p in rows if (p["iteration"], p["idx"]) > after]
        else:
            rows_after = rows
        page = rows_after[:limit]
        more = len(rows_after) > limit
        return {
            "items": page,
            "next_cursor": f"{page[-1]['iteration']}:{page[-1]['idx']}" if more else None,
            "total": len(rows) if include_total else None,
        }

    @api.get("/runs/{run_id}/pairs/export")
    def export(
        run_id: int,
        format: str = "jsonl",
        iteration: int | None = None,
        agreement: str | None = None,
        q: str | None = None,
    ) -> Response:
        run_or_404(run_id)
        rows = matching_pairs(run_id, iteration, agreement, None, None, q)
        lines = "".join(f'{{"id": "{p["uid"]}", "s_ref": {p["s_ref"]}}}\n' for p in rows)
        return Response(lines.encode(), media_type="application/x-ndjson")

    @api.get("/runs/{run_id}/eval-samples", response_model=schemas.EvalSamplePage)
    def eval_samples(
        run_id: int,
        iteration: int | None = None,
        benchmark: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        run_or_404(run_id)
        rows = [s for s in data.samples.get(run_id, []) if iteration is None or s["iteration"] == iteration]
        return {"items": rows[:limit], "next_cursor": None, "total": len(rows)}

    @api.post("/sweeps", status_code=201, response_model=schemas.SweepPublic)
    def create_sweep(
        body: schemas.SweepCreate, key: Annotated[str | None, Header(alias="Idempotency-Key")] = None
    ) -> dict[str, Any]:
        data.idempotency_keys.append(key)
        sweep_id = max(data.sweeps, default=0) + 1
        base = body.base_config.model_dump(mode="json", exclude_unset=True)
        data.sweeps[sweep_id] = {
            "id": sweep_id,
            "name": body.name,
            "base_config": base,
            "grid": body.grid,
            "max_concurrent": body.max_concurrent,
            "created_at": T0,
            "status_counts": {},
        }
        children = []
        for values in itertools.product(*body.grid.values()):
            point = dict(zip(body.grid, values, strict=True))
            run = _run(
                data.next_id(),
                body.name,
                "queued",
                base.get("objective", {"name": "aipo"}),
                sweep_id=sweep_id,
                sweep_point=point,
            )
            data.runs[run["id"]] = run
            children.append(run)
        return {**data.sweeps[sweep_id], "runs": children}

    @api.get("/sweeps/{sweep_id}", response_model=schemas.SweepPublic)
    def get_sweep(sweep_id: int) -> dict[str, Any]:
        if sweep_id not in data.sweeps:
            raise HTTPException(404, f"sweep {sweep_id} not found")
        children = [r for r in data.runs.values() if r["sweep_id"] == sweep_id]
        return {**data.sweeps[sweep_id], "runs": children}

    app.include_router(open_router)
    app.include_router(api)
    return app


# ----------------------------------------------------------------------------- serving


def free_port() -> int:
    """A port nothing listens on right now (bound and released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Serve `app` with uvicorn on 127.0.0.1 in a thread; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("stand-in API did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()
