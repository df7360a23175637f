"""POST /runs/preview and /sweeps/preview: the launch summary, same 422s as creating, no side effects."""

from __future__ import annotations

import json

from sqlalchemy import func, select

from aipo_core.architectures import TINY_LLAMA_ARCH
from aipo_core.estimate import decoder_parameters
from backend.db import get_sessionmaker
from backend.preview import model_size
from backend.routing import STAGES, queue_for
from backend.store.models import Run, Sweep
from tests.backend.conftest import Api, run_config

TINY_PARAMETERS = decoder_parameters(TINY_LLAMA_ARCH)


def counts(api: Api) -> tuple[int, int]:
    with get_sessionmaker(api.settings.resolved_database_url)() as session:
        return (
            session.scalar(select(func.count()).select_from(Run)) or 0,
            session.scalar(select(func.count()).select_from(Sweep)) or 0,
        )


def test_run_preview_reports_the_cost_and_creates_nothing(api: Api) -> None:
    before = counts(api)
    response = api.client.post("/api/v1/runs/preview", json=run_config(name="p", iterations=3))
    assert response.status_code == 200, response.text
    preview = response.json()
    # 3 iterations × 32 instructions × 4 candidates; token bounds as in aipo_core/estimate.py.
    assert preview["candidates"] == 3 * 32 * 4
    assert preview["generation_tokens"] == {
        "self_instruct": 3 * 32 * 4 * 64,
        "candidates": 3 * 32 * 4 * 128,
        "evaluation": 3 * 32 * 256,
        "total": 3 * 32 * 4 * 64 + 3 * 32 * 4 * 128 + 3 * 32 * 256,
    }
    assert preview["training_tokens"] == 3 * 32 * 2 * 640
    assert preview["model"] == {
        "spec": "tiny-random-llama",
        "parameters": TINY_PARAMETERS,
        "source": "built-in tiny-random-llama architecture",
    }
    assert preview["stages"] == [{"name": s, "queue": queue_for(s)} for s in STAGES]
    assert preview["stages_total"] == 15 and preview["queues"] == ["gpu"]
    assert counts(api) == before and api.launcher.sent == []


def test_preview_counts_the_runs_already_waiting(api: Api) -> None:
    waiting = api.client.post("/api/v1/runs/preview", json=run_config()).json()["active_runs"]
    api.create_run()
    assert api.client.post("/api/v1/runs/preview", json=run_config()).json()["active_runs"] == waiting + 1


def test_preview_refuses_exactly_what_create_refuses(api: Api, tmp_path_factory) -> None:
    outside = tmp_path_factory.mktemp("outside")
    bad_bodies = [
        run_config(iterations=0, training={"batch_sise": 8}),
        run_config(model=str(outside)),
        run_config(trust_remote_code=True),
        run_config(name="nul\x00"),
    ]
    for body in bad_bodies:
        preview = api.client.post("/api/v1/runs/preview", json=body)
        create = api.client.post("/api/v1/runs", json=body)
        assert preview.status_code == create.status_code == 422
        assert preview.json() == create.json()


def test_model_size_of_local_folders_and_uncached_hub_ids(api: Api) -> None:
    folder = api.home / "models" / "mine"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(TINY_LLAMA_ARCH))
    local = api.client.post("/api/v1/runs/preview", json=run_config(model=str(folder))).json()["model"]
    assert local == {
        "spec": str(folder),
        "parameters": TINY_PARAMETERS,
        "source": "config.json (llama layout)",
    }
    refused = api.client.post("/api/v1/runs/preview", json=run_config(model="nobody/not-cached-model"))
    assert refused.status_code == 422 and refused.json()["detail"][0]["type"] == "hub_model_not_allowed"
    allowed = api.settings.model_copy(update={"allowed_hub_models": ["nobody/*"]})
    hub = model_size("nobody/not-cached-model", allowed)
    assert hub.parameters is None and "not in this server's Hugging Face cache" in hub.source


def test_initial_pairs_are_counted_from_the_file(api: Api) -> None:
    pairs = api.home / "pairs.jsonl"
    row = '{"prompt": "Name a prime.", "chosen": "7", "rejected": "8"}\n'
    pairs.write_text(f"{row}{row}\n{row}")
    preview = api.client.post("/api/v1/runs/preview", json=run_config(initial_pairs=str(pairs))).json()
    assert preview["sampled_iterations"] == 1 and preview["training_pairs"] == 3 + 32
    assert preview["training_tokens"] == 3 * 2 * 1024 + 32 * 2 * 640
    assert preview["notes"] == ["iteration 0 trains on the imported initial_pairs and samples nothing"]


def test_sweep_preview_totals_every_child(api: Api) -> None:
    before = counts(api)
    grid = {"objective.alpha": [0.03, 0.05, 0.07], "iterations": [1, 2]}
    body = {"name": "grid", "base_config": run_config(), "grid": grid, "max_concurrent": 2}
    response = api.client.post("/api/v1/sweeps/preview", json=body)
    assert response.status_code == 200, response.text
    preview = response.json()
    assert preview["runs"] == 6 and preview["max_concurrent"] == 2
    single = api.client.post("/api/v1/runs/preview", json=run_config(iterations=1)).json()
    assert preview["totals"] == {
        "candidates": 9 * single["candidates"],  # 3 one-iteration + 3 two-iteration children
        "generation_tokens": 9 * single["generation_tokens"]["total"],
        "training_tokens": 9 * single["training_tokens"],
        "judge_passes": 9 * single["judge_passes"],
        "stages_total": 9 * len(STAGES),
    }
    assert [child["point"] for child in preview["children"]][:2] == [
        {"objective.alpha": 0.03, "iterations": 1},
        {"objective.alpha": 0.03, "iterations": 2},
    ]
    assert preview["models"] == [single["model"]]
    assert counts(api) == before and api.launcher.sent == []


def test_sweep_preview_refuses_what_create_refuses(api: Api) -> None:
    body = {"name": "bad", "base_config": run_config(), "grid": {"objective.alpha": [0.05, -1]}}
    preview = api.client.post("/api/v1/sweeps/preview", json=body)
    create = api.client.post("/api/v1/sweeps", json=body)
    assert preview.status_code == create.status_code == 422 and preview.json() == create.json()
    too_many = {**body, "grid": {"seed": list(range(64)), "iterations": list(range(1, 6))}}
    response = api.client.post("/api/v1/sweeps/preview", json=too_many)
    assert response.status_code == 422 and "exceed the limit" in response.text
