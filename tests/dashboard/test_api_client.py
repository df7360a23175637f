"""api_client against the real API (tests/dashboard/seeded_backend.py): reads, writes, errors, cache."""

from __future__ import annotations

import json

import pytest

from dashboard import api_client
from dashboard.api_client import FieldError
from tests.dashboard.seeded_backend import LOG_TEXT, SeededApi


def test_list_runs_filters_and_counts_active_runs(backend: SeededApi) -> None:
    page = api_client.list_runs()
    assert page.total == 6 and page.active == 1
    assert [r["id"] for r in page.items] == [6, 5, 4, 3, 2, 1]
    first = page.items[-1]
    assert (first["name"], first["objective"], first["config"]["model"], first["config"]["iterations"]) == (
        "aipo-smollm2", "aipo", "smollm2-135m-instruct", 2,
    )  # fmt: skip
    assert [r["id"] for r in api_client.list_runs(status="running").items] == [2]
    assert [r["id"] for r in api_client.list_runs(sweep_id=1).items] == [6, 5, 4, 3]
    assert api_client.list_runs(name="DPO").total == 1
    assert [r["id"] for r in api_client.list_runs(limit=2, offset=1).items] == [5, 4]


def test_runs_carry_their_latest_evaluation(backend: SeededApi) -> None:
    latest = api_client.get_run(1)["latest_evaluation"]
    assert (latest["benchmark"], latest["iteration"], latest["policy_index"]) == ("alpaca_eval", 1, 2)
    assert latest["n"] == 40 and latest["seed"] == 0 and latest["self_judged"] is False
    assert latest["win_rate_se"] > 0 and latest["lc_win_rate_se"] > 0
    served = api_client.run_iterations(1)["items"][1]["evaluations"]["alpaca_eval"]
    assert (latest["win_rate"], latest["lc_win_rate"]) == (served["win_rate"], served["lc_win_rate"])


def test_unknown_run_is_not_found(backend: SeededApi) -> None:
    with pytest.raises(api_client.ApiNotFound, match="Run 99 not found"):
        api_client.get_run(99)


def test_wrong_token_is_unauthorised_with_a_hint(backend: SeededApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIPO_API_TOKEN", "wrong")
    with pytest.raises(api_client.ApiUnauthorized, match="AIPO_API_TOKEN") as info:
        api_client.list_runs()
    assert info.value.status == 401


def test_token_is_read_from_aipo_home(backend: SeededApi, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv("AIPO_API_TOKEN")
    (tmp_path / "token").write_text(backend.token + "\n")
    assert api_client.get_run(1)["id"] == 1


def test_api_down_is_unavailable_and_names_the_url(api_down: str) -> None:
    with pytest.raises(api_client.ApiUnavailable, match=api_down.replace(".", r"\.")):
        api_client.list_runs()
    with pytest.raises(api_client.ApiUnavailable):
        api_client.health()


def test_health_and_whoami(backend: SeededApi) -> None:
    assert api_client.health() == {"status": "ok", "database": "ok"}
    assert api_client.whoami() == {"name": "operator", "scope": "write", "operator": True}


def test_reads_are_cached_and_writes_clear_the_cache(backend: SeededApi) -> None:
    assert api_client.get_run(2)["status"] == "running"
    backend.set_status(2, "failed")  # behind the dashboard's back
    assert api_client.get_run(2)["status"] == "running"  # served from the cache
    api_client.clear_cache()
    assert api_client.get_run(2)["status"] == "failed"
    backend.set_status(2, "running")
    api_client.clear_cache()
    assert api_client.get_run(2)["status"] == "running"
    api_client.cancel_run(2)  # a write clears every cached read
    assert api_client.get_run(2)["status"] == "cancelled"


def test_create_run_422_has_field_paths_from_the_real_config_model(backend: SeededApi) -> None:
    with pytest.raises(api_client.ApiValidationError) as info:
        api_client.create_run({"name": "x", "model": "tiny-random-llama", "iterations": 0, "colour": "red"})
    assert {e.path for e in info.value.field_errors} == {"iterations", "colour"}
    assert "iterations" in str(info.value)
    assert api_client.list_runs().total == 6  # nothing stored


def test_create_run_stores_and_launches_the_config(backend: SeededApi) -> None:
    run = api_client.create_run({"name": "new", "model": "tiny-random-llama", "objective": {"name": "dpo"}})
    assert run["status"] == "queued" and run["objective"] == "dpo" and run["replayed"] is False
    assert api_client.get_run(run["id"])["config"]["name"] == "new"
    assert backend.launcher.sent[-1][0] == "self_instruct"


def test_conflicting_action_is_an_api_error_with_the_reason(backend: SeededApi) -> None:
    with pytest.raises(api_client.ApiError, match="HTTP 409.*succeeded") as info:
        api_client.cancel_run(1)
    assert info.value.status == 409


def test_resume_requeues_a_cancelled_run(backend: SeededApi) -> None:
    api_client.cancel_run(2)
    assert api_client.resume_run(2)["status"] == "queued"


def test_clone_applies_overrides(backend: SeededApi) -> None:
    clone = api_client.clone_run(1, {"objective.alpha": 0.03})
    assert clone["id"] == 7 and clone["parent_run_id"] == 1
    assert clone["config"]["objective"]["alpha"] == 0.03


def test_iterations_are_the_api_body(backend: SeededApi) -> None:
    body = api_client.run_iterations(2)
    assert [it["index"] for it in body["items"]] == [0, 1]
    assert body["items"][0]["evaluations"]["alpaca_eval"]["policy_index"] == 1
    assert body["items"][1]["evaluations"] == {}  # iteration 1 is still training
    assert body["items"][0]["pair_stats"]["agreement_rate"] == 0.75
    assert body["base_evaluations"]["alpaca_eval"]["evaluated"] == "base"


def test_stages_in_order_with_live_progress(backend: SeededApi) -> None:
    stages = api_client.run_stages(2)
    assert [s["position"] for s in stages] == list(range(10))
    running = [s for s in stages if s["status"] == "running"]
    assert [(s["iteration"], s["name"], s["progress"], s["message"]) for s in running] == [
        (1, "train", 0.4, "step 4/10")
    ]


def test_stage_log_text_and_missing_log(backend: SeededApi) -> None:
    first = api_client.run_stages(1)[0]
    assert api_client.stage_log(1, first["id"]) == LOG_TEXT
    pending = api_client.run_stages(2)[-1]
    with pytest.raises(api_client.ApiNotFound):
        api_client.stage_log(2, pending["id"])  # a pending stage has no log


def test_metric_keys_and_histories(backend: SeededApi) -> None:
    keys = api_client.metric_keys(1)
    assert keys["loss"] == 20 and "rewards_chosen" in keys
    histories = api_client.metric_histories(1, ["loss", "accuracy", "never_logged"])
    loss = histories["loss"]
    assert len(loss) == 20 and {p["iteration"] for p in loss} == {0, 1}
    assert loss[0]["value"] == pytest.approx(0.673)
    assert histories["never_logged"] == []
    only_second = api_client.metric_histories(1, ["loss"], iteration=1)["loss"]
    assert {p["iteration"] for p in only_second} == {1}


def test_pairs_filters_and_cursor_pages(backend: SeededApi) -> None:
    page = api_client.list_pairs(1, limit=4, include_total=True)
    assert page.total == 6 and len(page.items) == 4 and page.next_cursor is not None
    second = api_client.list_pairs(1, limit=4, cursor=page.next_cursor)
    assert [p["uid"] for p in second.items] == ["p-4", "p-5"] and second.next_cursor is None
    disagree = api_client.list_pairs(1, agreement="disagree")
    assert sorted(p["s_ref"] for p in disagree.items) == [-2.0, -0.5]
    assert [p["prompt_text"] for p in api_client.list_pairs(1, q="haiku").items] == [
        "Write a haiku about rain."
    ]
    longer = api_client.list_pairs(1, min_length_diff=5).items
    assert longer and all(p["length_diff"] >= 5 for p in longer)
    with pytest.raises(ValueError, match="agreement"):
        api_client.list_pairs(1, agreement="yes")


def test_all_pairs_follows_cursors_up_to_the_cap(backend: SeededApi) -> None:
    assert len(api_client.all_pairs(1, page_size=2)) == 6
    assert len(api_client.all_pairs(1, page_size=2, cap=3)) == 3
    assert [p["iteration"] for p in api_client.all_pairs(1, iteration=1)] == [1, 1]


def test_export_pairs_is_the_raw_download(backend: SeededApi) -> None:
    lines = api_client.export_pairs(1, agreement="agree").decode().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["p-0", "p-1", "p-3", "p-5"]
    with pytest.raises(ValueError, match="fmt"):
        api_client.export_pairs(1, fmt="csv")


def test_eval_samples_page(backend: SeededApi) -> None:
    page = api_client.eval_samples(1, limit=5)
    assert len(page.items) == 5 and page.total == 120 and page.next_cursor is not None
    assert page.items[0]["evaluated"] == "base"  # θ_0's answers come first
    assert api_client.eval_samples(1, iteration=1, limit=50).total == 40


def test_sweep_with_its_runs(backend: SeededApi) -> None:
    sweep = api_client.get_sweep(1)
    assert sweep["grid"] == {"objective.alpha": [0.03, 0.05], "objective.lambda_": [0.2, 0.5]}
    assert sweep["status_counts"] == {"succeeded": 4}
    child = next(r for r in sweep["runs"] if r["id"] == 6)
    assert child["sweep_point"] == {"objective.alpha": 0.05, "objective.lambda_": 0.5}
    assert child["latest_evaluation"]["policy_index"] == 2


def test_create_sweep(backend: SeededApi) -> None:
    body = {
        "name": "g",
        "base_config": {"name": "b", "model": "tiny-random-llama"},
        "grid": {"objective.alpha": [0.01, 0.02]},
    }
    sweep = api_client.create_sweep(body)
    assert len(sweep["runs"]) == 2 and sweep["replayed"] is False


def test_previews_create_nothing(backend: SeededApi) -> None:
    preview = api_client.preview_run({"name": "p", "model": "tiny-random-llama", "iterations": 3})
    assert preview["iterations"] == 3 and preview["stages_total"] == 15
    sweep = api_client.preview_sweep(
        {"name": "g", "base_config": {"name": "b", "model": "tiny-random-llama"}, "grid": {"seed": [1, 2, 3]}}
    )
    assert sweep["runs"] == 3
    assert api_client.list_runs().total == 6


def test_objectives_are_the_registry(backend: SeededApi) -> None:
    aipo = next(o for o in api_client.objectives() if o["name"] == "aipo")
    assert aipo["defaults"] == {"beta": 0.1, "alpha": 0.05, "lambda_": 0.2}
    assert aipo["scales_reference"] is True


def test_field_errors_from_fastapi_bodies() -> None:
    fastapi_body = {
        "detail": [
            {"loc": ["body", "objective", "alpha"], "msg": "must be ≥ 0"},
            {"loc": ["query", "cursor"], "msg": "bad cursor"},
        ]
    }
    assert api_client.field_errors(fastapi_body) == (
        FieldError("objective.alpha", "must be ≥ 0"),
        FieldError("query.cursor", "bad cursor"),
    )
    assert api_client.field_errors({"detail": "nope"}) == (FieldError("", "nope"),)
