"""The real API (`backend.app.create_app`) on SQLite, seeded through the store, for dashboard tests.

What the dashboard reads is exactly what the backend serves: no imitation of its routes, filters,
cursors or writes. The data is small and hand-made, stored with the functions the workers use:

* run 1 `aipo-smollm2` (aipo): finished, 2 iterations, θ_0..θ_2 judged, pairs, train metrics, a log;
* run 2 `dpo-baseline` (dpo): running (iteration 1's train stage at 40 %), θ_0 and θ_1 judged;
* runs 3–6: sweep 1 `aipo-grid`, objective.alpha [0.03, 0.05] × objective.lambda_ [0.2, 0.5], finished.

Only the broker is replaced (`RecordingLauncher`, as in the backend tests): writes through the
API (cancel, resume, clone, launch) change the database as they do in production.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from aipo_core.config import RunConfig
from backend.app import create_app
from backend.db import dispose_engines, get_sessionmaker
from backend.deps import get_launcher
from backend.migrate import upgrade
from backend.settings import Settings
from backend.store import eval_samples, metrics, pairs, runs, stages, sweeps
from backend.store.models import Run
from tests.backend.conftest import TOKEN, RecordingLauncher, make_settings, serve

BASE_CONFIG: dict[str, Any] = {
    "name": "aipo-smollm2",
    "model": "smollm2-135m-instruct",
    "iterations": 2,
    "objective": {"name": "aipo", "beta": 0.1, "alpha": 0.05, "lambda_": 0.2},
    "evaluation": {"benchmarks": ["alpaca_eval"], "limit": 40, "seed": 0},
}
STAGES_PER_RUN = 10  # 2 iterations × 5 stages
LOG_TEXT = "[self_instruct] started\n[self_instruct] 32 instructions\n"
# (prompt, chosen, rejected, s_ref): iteration 0 gets the first four pairs, iteration 1 the rest.
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
SWEEP_GRID = {"objective.alpha": [0.03, 0.05], "objective.lambda_": [0.2, 0.5]}


def config(name: str, objective: dict[str, Any]) -> RunConfig:
    return RunConfig.model_validate({**BASE_CONFIG, "name": name, "objective": objective})


def pair_records() -> list[tuple[int, dict[str, Any]]]:
    """(iteration, TRL-style record) of every seeded pair: s_ref = ref_chosen − ref_rejected."""
    records = []
    for n, (prompt, chosen, rejected, s_ref) in enumerate(PAIR_TEXTS):
        chosen_len, rejected_len = len(chosen.split()) + 2, len(rejected.split()) + 2
        ref_rejected = -2.0 * rejected_len
        record = {
            "id": f"p-{n}",
            "prompt": [{"role": "user", "content": prompt}],
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
            "score_chosen": 0.9,
            "score_rejected": 0.1,
            "chosen_length": chosen_len,
            "rejected_length": rejected_len,
            "chosen_chars": len(chosen),
            "rejected_chars": len(rejected),
            "ref_chosen_logps": ref_rejected + s_ref,
            "ref_rejected_logps": ref_rejected,
        }
        records.append((0 if n < 4 else 1, record))
    return records


def judged(seed: int, strength: float, n: int = 40) -> list[dict[str, Any]]:
    """n eval records against the AlpacaEval baseline; longer answers win more often."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        baseline_chars = int(rng.integers(800, 2500))
        output_chars = int(baseline_chars * rng.uniform(0.3, 1.3) + 100 * strength)
        p_win = 1.0 / (1.0 + np.exp(-(strength + np.tanh((output_chars - baseline_chars) / 600))))
        records.append(
            {
                "id": str(10 * i),
                "instruction": f"Instruction {i}",
                "output": f"Model answer {i} " + "o" * output_chars,
                "baseline_output": "GPT-4 answer " + "b" * baseline_chars,
                "preference": 2.0 if rng.random() < p_win else 1.0,
                "output_chars": output_chars,
                "baseline_chars": baseline_chars,
                "output_tokens": output_chars // 4,
            }
        )
    return records


def train_points(iteration: int, steps: int = 10) -> list[dict[str, Any]]:
    """The train stage's series: chosen rewards rise, rejected fall, loss falls from log 2."""
    points = []
    for step in range(1, steps + 1):
        values = {
            "loss": 0.693 - 0.02 * step - 0.05 * iteration,
            "rewards_chosen": 0.01 * step,
            "rewards_rejected": -0.02 * step,
            "margins": 0.03 * step,
            "accuracy": 0.5 + 0.04 * step,
            "gradient_weight_mean": 0.5 - 0.01 * step,
        }
        points.extend(
            {"iteration": iteration, "stage": "train", "key": key, "step": step, "value": value}
            for key, value in values.items()
        )
    return points


def finish_stages(session: Session, run_id: int, count: int) -> None:
    """Claim and complete the run's first `count` stages, as a worker does."""
    for stage in stages.list_stages(session, run_id)[:count]:
        stages.claim_stage(session, stage.id)
        stages.complete_stage(session, stage.id)


def store_evaluations(session: Session, run_id: int, policies: int, seed: int, strength: float) -> None:
    """θ_0 and θ_1..θ_policies judged on the same 40 prompts, each stronger than the last."""
    eval_samples.replace_eval_samples(
        session, run_id, 0, "alpaca_eval", judged(seed, strength - 0.5), evaluated="base"
    )
    for iteration in range(policies):
        records = judged(seed + 1 + iteration, strength + 0.5 * iteration)
        eval_samples.replace_eval_samples(session, run_id, iteration, "alpaca_eval", records)


def store_run_data(session: Session, run_id: int, trained_iterations: int) -> None:
    by_iteration: dict[int, list[dict[str, Any]]] = {}
    for iteration, record in pair_records():
        by_iteration.setdefault(iteration, []).append(record)
    for iteration, records in by_iteration.items():
        pairs.replace_pairs(session, run_id, iteration, records)
    for iteration in range(trained_iterations):
        metrics.ingest_metrics(session, run_id, train_points(iteration))


def seed(session: Session, artifact_root: Path) -> None:
    """The six runs and the sweep described in the module docstring (ids 1–6, sweep 1)."""
    finished = runs.create_run(
        session, config("aipo-smollm2", BASE_CONFIG["objective"]), created_by="operator"
    )
    session.flush()
    finish_stages(session, finished.id, STAGES_PER_RUN)
    store_run_data(session, finished.id, trained_iterations=2)
    store_evaluations(session, finished.id, policies=2, seed=10, strength=0.0)
    first = stages.list_stages(session, finished.id)[0]
    log = stages.stage_log_path(artifact_root, finished.id, first.iteration, first.name)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(LOG_TEXT)

    running = runs.create_run(
        session, config("dpo-baseline", {"name": "dpo", "beta": 0.1}), created_by="operator"
    )
    session.flush()
    finish_stages(session, running.id, 8)
    train = stages.list_stages(session, running.id)[8]
    stages.claim_stage(session, train.id)
    stages.heartbeat(session, train.id, progress=0.4, message="step 4/10")
    store_run_data(session, running.id, trained_iterations=1)
    store_evaluations(session, running.id, policies=1, seed=20, strength=0.2)

    sweep = sweeps.create_sweep(
        session, "aipo-grid", config("aipo-grid", {"name": "aipo"}), SWEEP_GRID, 2, created_by="operator"
    )
    session.flush()
    children = sorted(sweep.runs, key=lambda r: r.id)
    for n, child in enumerate(children):
        finish_stages(session, child.id, STAGES_PER_RUN)
        store_run_data(session, child.id, trained_iterations=2)
        store_evaluations(session, child.id, policies=2, seed=30 + 10 * n, strength=0.3 * n)
    session.commit()


@dataclass
class SeededApi:
    url: str
    token: str
    settings: Settings
    launcher: RecordingLauncher

    def session(self) -> Session:
        return get_sessionmaker(self.settings.resolved_database_url)()

    def set_status(self, run_id: int, status: str, error: str | None = None) -> None:
        """Change a run's status (and error) behind the dashboard's back, as a worker would."""
        with self.session() as session:
            run = session.get(Run, run_id)
            run.status, run.error = status, error
            session.commit()


def migrated_database(directory: Path, *, seeded: bool = True) -> Path:
    """`directory` with a migrated SQLite file aipo.db (`seeded`: with the data above, artifacts
    under home/)."""
    url = f"sqlite:///{directory / 'aipo.db'}"
    upgrade(url)
    (directory / "home").mkdir(exist_ok=True)
    if seeded:
        with get_sessionmaker(url)() as session:
            seed(session, directory / "home")
    dispose_engines()
    return directory


@contextmanager
def serve_seeded(template: Path, directory: Path) -> Iterator[SeededApi]:
    """The real API over a private copy of the seeded `template` database, on 127.0.0.1:<port>."""
    shutil.copytree(template, directory, dirs_exist_ok=True)
    settings = make_settings(directory / "home", f"sqlite:///{directory / 'aipo.db'}")
    launcher = RecordingLauncher()
    app = create_app(settings)
    app.dependency_overrides[get_launcher] = lambda: launcher
    try:
        with serve(app) as url:
            yield SeededApi(url=url, token=TOKEN, settings=settings, launcher=launcher)
    finally:
        dispose_engines()
