"""POST /runs refuses what the server's policy refuses, on SQLite and PostgreSQL: paths decided by
their resolved spelling inside the data roots (never by existence, never the server's internals),
hub models off the allow-list, annotator paths, unbounded work and the operator's run budget. Then
the files and model folders the config names are read as the run would (their first
AIPO_CHECK_INPUT_MAX_BYTES): a bad row is a 422 naming its line."""

from __future__ import annotations

from typing import Any

import pytest

from backend.settings import Settings
from backend.validation import policy_errors
from tests.backend.conftest import Api, run_config
from tests.backend.conftest import small_config as validated


def refused(api: Api, **overrides: Any) -> dict[tuple, str]:
    """loc → error type of a 422 answer (asserting it is one)."""
    response = api.client.post("/api/v1/runs", json=run_config(**overrides))
    assert response.status_code == 422, response.text
    return {tuple(e["loc"]): e["type"] for e in response.json()["detail"]}


TRAVERSAL = "nosuchdir/../../../../../../../../etc/passwd"


def test_traversal_through_a_missing_folder_is_refused_in_every_path_field(api: Api) -> None:
    errors = refused(
        api,
        model=TRAVERSAL,
        prompt_pool=TRAVERSAL,
        initial_pairs=TRAVERSAL,
        ranker={"kind": "reward_model", "model": TRAVERSAL},
        evaluation={"judge": {"kind": "llm_judge", "model": TRAVERSAL}},
    )
    assert errors == {
        ("body", "model"): "path_not_allowed",
        ("body", "prompt_pool"): "path_not_allowed",
        ("body", "initial_pairs"): "path_not_allowed",
        ("body", "ranker", "model"): "path_not_allowed",
        ("body", "evaluation", "judge", "model"): "path_not_allowed",
    }


@pytest.mark.parametrize(
    "internal", ["token", "logs/api.log", "broker/in/1.msg", "runs/1/logs/iter_0_train.log"]
)
def test_the_servers_internals_are_refused_although_the_home_is_a_data_root(api: Api, internal: str) -> None:
    assert api.settings.resolved_allowed_roots == [api.home.resolve()]
    assert refused(api, prompt_pool=str(api.home / internal)) == {("body", "prompt_pool"): "path_not_allowed"}


def test_the_sqlite_database_is_refused_even_inside_a_data_root(tmp_path) -> None:
    database = tmp_path / "aipo.db"
    settings = Settings(
        home=tmp_path / "home", database_url=f"sqlite:///{database}", allowed_roots=[tmp_path]
    )
    errors = policy_errors(validated(prompt_pool=str(database), initial_pairs=f"{database}-wal"), settings)
    assert {e["loc"]: e["msg"] for e in errors}.keys() == {("body", "prompt_pool"), ("body", "initial_pairs")}
    assert all("holds server internals" in e["msg"] for e in errors)


def test_a_symlink_escaping_the_root_is_refused(api: Api, tmp_path_factory) -> None:
    outside = tmp_path_factory.mktemp("outside") / "pool.jsonl"
    outside.write_text('{"instruction": "hi"}\n')
    link = api.home / "innocent.jsonl"
    link.symlink_to(outside)
    assert refused(api, prompt_pool=str(link)) == {("body", "prompt_pool"): "path_not_allowed"}
    inside = api.home / "pool.jsonl"
    inside.write_text('{"instruction": "hi"}\n')
    assert api.client.post("/api/v1/runs", json=run_config(prompt_pool=str(inside))).status_code == 201


def test_bundled_names_are_not_paths(api: Api) -> None:
    config = run_config(model="tiny-random-llama", prompt_pool="self_instruct_seeds")
    assert api.client.post("/api/v1/runs", json=config).status_code == 201
    assert api.client.post("/api/v1/runs", json=run_config(model="smollm2-135m-instruct")).status_code == 201


def test_annotator_paths_are_checked_names_pass(api: Api) -> None:
    judge = {"kind": "alpaca_eval", "annotator": "../../../etc/alpaca"}
    errors = refused(api, evaluation={"judge": judge})
    assert errors == {("body", "evaluation", "judge", "annotator"): "path_not_allowed"}
    judge = {"kind": "alpaca_eval", "annotator": str(api.home / "token")}
    assert refused(api, evaluation={"judge": judge}) == errors
    named = run_config(
        evaluation={"judge": {"kind": "alpaca_eval", "annotator": "weighted_alpaca_eval_gpt4_turbo"}}
    )
    assert api.client.post("/api/v1/runs", json=named).status_code == 201


def test_hub_models_off_the_allow_list_are_refused_by_field(api: Api) -> None:
    errors = refused(
        api,
        model="evil/phi-2",
        ranker={"kind": "pairrm", "model": "evil/phi-pairrm"},
        evaluation={"judge": {"kind": "reward_model", "model": "evil/rm"}},
    )
    assert errors == {
        ("body", "model"): "hub_model_not_allowed",
        ("body", "ranker", "model"): "hub_model_not_allowed",
        ("body", "evaluation", "judge", "model"): "hub_model_not_allowed",
    }
    pairrm = run_config(ranker={"kind": "pairrm", "model": "policy"})  # the published PairRM: allowed
    assert api.client.post("/api/v1/runs", json=pairrm).status_code == 201
    api.settings.allowed_hub_models = []
    assert refused(api, ranker={"kind": "pairrm", "model": "policy"}) == {
        ("body", "ranker", "model"): "hub_model_not_allowed"
    }


def test_unbounded_work_is_refused_with_field_names(api: Api) -> None:
    errors = refused(
        api,
        iterations=1000,
        seed=2**80,
        evaluation={"benchmarks": ["alpaca_eval"] * 20_000},
        self_instruct={"num_instructions": 100_000, "max_attempts_factor": 100},
    )
    assert set(errors) == {
        ("body", "iterations"),
        ("body", "seed"),
        ("body", "evaluation", "benchmarks"),
        ("body", "self_instruct", "num_instructions"),
        ("body", "self_instruct", "max_attempts_factor"),
    }
    duplicate = refused(api, evaluation={"benchmarks": ["alpaca_eval", "alpaca_eval"]})
    assert duplicate == {("body", "evaluation", "benchmarks"): "value_error"}


def test_the_operators_run_budget_and_iteration_limit(api: Api) -> None:
    big = {
        "iterations": 10,
        "generation": {"num_candidates": 8},
        "self_instruct": {"num_instructions": 20_000},
    }
    response = api.client.post("/api/v1/runs", json=run_config(**big))
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert {tuple(e["loc"]) for e in detail} == {
        ("body", "iterations"),
        ("body", "generation", "num_candidates"),
        ("body", "self_instruct", "num_instructions"),
    }
    assert all(e["type"] == "run_budget_exceeded" and "1,600,000" in e["msg"] for e in detail)
    api.settings.max_run_budget = 2_000_000
    assert api.client.post("/api/v1/runs", json=run_config(**big)).status_code == 201
    assert refused(api, iterations=21) == {("body", "iterations"): "too_many_iterations"}


def test_sweep_children_get_the_same_checks(api: Api) -> None:
    body = {"name": "s", "base_config": run_config(), "grid": {"model": ["tiny-random-llama", TRAVERSAL]}}
    response = api.client.post("/api/v1/sweeps", json=body)
    assert response.status_code == 422
    assert any(e["type"] == "path_not_allowed" for e in response.json()["detail"])


GOOD_PAIR = '{"prompt": "Name a prime.", "chosen": "7", "rejected": "8"}\n'


def malformed_pairs(api: Api) -> str:
    """Nine pairs inside the data root; line 6 has no `rejected`."""
    path = api.home / "file.jsonl"
    path.write_text(GOOD_PAIR * 5 + '{"prompt": "q", "chosen": "a"}\n' + GOOD_PAIR * 3)
    return str(path)


def test_a_malformed_pairs_file_is_refused_at_launch_naming_its_line(api: Api) -> None:
    path = malformed_pairs(api)
    response = api.client.post("/api/v1/runs", json=run_config(initial_pairs=path))
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "initial_pairs"] and error["type"] == "invalid_rows"
    assert error["msg"] == f"{path}:6: missing field 'rejected' (1 row bad, 8 good)"
    assert api.launcher.sent == []
    preview = api.client.post("/api/v1/runs/preview", json=run_config(initial_pairs=path))
    assert preview.status_code == 422 and preview.json()["detail"] == response.json()["detail"]


def test_missing_files_and_folders_that_are_no_checkpoint_are_refused(api: Api) -> None:
    (api.home / "ckpt").mkdir()
    errors = refused(api, prompt_pool=str(api.home / "nope.jsonl"), model=str(api.home / "ckpt"))
    assert errors == {("body", "prompt_pool"): "file_not_found", ("body", "model"): "not_a_checkpoint"}


def test_a_field_the_policy_refuses_gets_one_error_not_two(api: Api) -> None:
    assert refused(api, initial_pairs="/etc/passwd") == {("body", "initial_pairs"): "path_not_allowed"}


def test_the_api_reads_at_most_check_input_max_bytes_of_a_file(api: Api) -> None:
    """A bad row past the bound is the worker's to find (the rank stage parses the whole file)."""
    path = malformed_pairs(api)
    api.settings.check_input_max_bytes = 5 * len(GOOD_PAIR)
    assert api.client.post("/api/v1/runs", json=run_config(initial_pairs=path)).status_code == 201
    api.settings.check_input_max_bytes = 6 * len(GOOD_PAIR)
    assert api.client.post("/api/v1/runs", json=run_config(initial_pairs=path)).status_code == 422


def test_the_file_check_can_be_turned_off_for_an_api_that_cannot_see_the_workers_files(api: Api) -> None:
    api.settings.check_input_files = False
    config = run_config(initial_pairs=str(api.home / "only-on-the-worker.jsonl"))
    assert api.client.post("/api/v1/runs", json=config).status_code == 201


def test_a_sweep_reports_a_bad_file_once_not_per_child(api: Api) -> None:
    body = {
        "name": "grid",
        "base_config": run_config(initial_pairs=malformed_pairs(api)),
        "grid": {"objective.alpha": [0.03, 0.05, 0.07]},
    }
    response = api.client.post("/api/v1/sweeps", json=body)
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["detail"]] == [["body", "base_config", "initial_pairs"]]
    other = api.home / "other.jsonl"
    other.write_text('{"prompt": "q"}\n')
    grid = {"initial_pairs": [body["base_config"]["initial_pairs"], str(other)]}
    response = api.client.post("/api/v1/sweeps", json={**body, "grid": grid})
    locs = [e["loc"] for e in response.json()["detail"]]
    assert locs == [["body", "base_config", "initial_pairs"], ["body", "grid", "initial_pairs"]]
