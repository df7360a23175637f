"""api_client against a real HTTP server (the stand-in API), plus its pure field mapping."""

from __future__ import annotations

import json
import math

import pytest

from dashboard import api_client
from dashboard.api_client import FieldError


def test_list_runs_normalises_and_filters(stand_in):
    page = api_client.list_runs()
    assert page.total == 6
    assert [r["id"] for r in page.items] == [6, 5, 4, 3, 2, 1]
    first = page.items[-1]
    assert (first["name"], first["objective"], first["model"], first["iterations"]) == (
        "aipo-smollm2",
        "aipo",
        "smollm2-135m-instruct",
        2,
    )
    assert [r["id"] for r in api_client.list_runs(status="running").items] == [2]
    assert [r["id"] for r in api_client.list_runs(sweep_id=1).items] == [6, 5, 4, 3]
    assert api_client.list_runs(name="DPO").total == 1


def test_unknown_run_is_not_found(stand_in):
    with pytest.raises(api_client.ApiNotFound, match="Run 99 not found"):
        api_client.get_run(99)


def test_wrong_token_is_unauthorised_with_a_hint(stand_in, monkeypatch):
    monkeypatch.setenv("AIPO_API_TOKEN", "wrong")
    with pytest.raises(api_client.ApiUnauthorized, match="AIPO_API_TOKEN") as info:
        api_client.list_runs()
    assert info.value.status == 401


def test_token_is_read_from_aipo_home(stand_in, monkeypatch, tmp_path):
    monkeypatch.delenv("AIPO_API_TOKEN")
    (tmp_path / "token").write_text(stand_in.token + "\n")
    assert api_client.get_run(1)["id"] == 1


def test_api_down_is_unavailable_and_names_the_url(api_down):
    with pytest.raises(api_client.ApiUnavailable, match=api_down.replace(".", r"\.")):
        api_client.list_runs()
    with pytest.raises(api_client.ApiUnavailable):
        api_client.health()


def test_health(stand_in):
    assert api_client.health() == {"status": "ok", "database": "ok"}


def test_reads_are_cached_and_writes_clear_the_cache(stand_in):
    assert api_client.get_run(2)["status"] == "running"
    stand_in.data.runs[2]["status"] = "failed"  # behind the dashboard's back
    assert api_client.get_run(2)["status"] == "running"  # served from the cache
    api_client.clear_cache()
    assert api_client.get_run(2)["status"] == "failed"
    stand_in.data.runs[2]["status"] = "running"
    api_client.clear_cache()
    assert api_client.get_run(2)["status"] == "running"
    api_client.cancel_run(2)  # a write clears every cached read
    assert api_client.get_run(2)["status"] == "cancelled"


def test_create_run_422_has_field_paths_from_the_real_config_model(stand_in):
    with pytest.raises(api_client.ApiValidationError) as info:
        api_client.create_run({"name": "x", "model": "tiny-random-llama", "iterations": 0, "colour": "red"})
    paths = {e.path for e in info.value.field_errors}
    assert paths == {"iterations", "colour"}
    assert "iterations" in str(info.value)
    assert stand_in.data.created == []


def test_create_run_sends_the_config(stand_in):
    run = api_client.create_run({"name": "new", "model": "tiny-random-llama", "objective": {"name": "dpo"}})
    assert run["status"] == "queued" and run["objective"] == "dpo"
    assert stand_in.data.created == [
        {"name": "new", "model": "tiny-random-llama", "objective": {"name": "dpo"}}
    ]


def test_conflicting_action_is_an_api_error_with_the_reason(stand_in):
    with pytest.raises(api_client.ApiError, match="HTTP 409.*succeeded") as info:
        api_client.cancel_run(1)
    assert info.value.status == 409


def test_clone_sends_overrides(stand_in):
    clone = api_client.clone_run(1, {"objective.alpha": 0.03})
    assert clone["id"] == 7 and stand_in.data.runs[7]["parent_run_id"] == 1


def test_iterations_carry_headline_metrics_and_pair_stats(stand_in):
    its = api_client.run_iterations(2)
    assert [it["iteration"] for it in its] == [0, 1]
    assert (its[0]["win_rate"], its[0]["lc_win_rate"], its[0]["avg_length"]) == (11.0, 11.5, 1000.0)
    assert math.isnan(its[1]["win_rate"])  # iteration 1 not evaluated yet
    assert its[0]["pair_stats"]["agreement_rate"] == 0.75
    assert api_client.latest_eval(2) == {
        "eval_iteration": 0.0,
        "win_rate": 11.0,
        "lc_win_rate": 11.5,
        "avg_length": 1000.0,
    }


def test_stages_sorted_with_clamped_progress(stand_in):
    stages = api_client.run_stages(2)
    assert [s["position"] for s in stages] == list(range(10))
    running = [s for s in stages if s["status"] == "running"]
    assert [(s["iteration"], s["name"], s["progress"], s["message"]) for s in running] == [
        (1, "train", 0.4, "step 4/10")
    ]


def test_stage_log_text_and_missing_log(stand_in):
    assert "[self_instruct] started" in api_client.stage_log(1, 100)
    with pytest.raises(api_client.ApiNotFound):
        api_client.stage_log(2, 209)  # a pending stage has no log


def test_metric_keys_and_histories(stand_in):
    keys = api_client.metric_keys(1)
    assert keys["loss"] == 20 and "rewards_chosen" in keys
    histories = api_client.metric_histories(1, ["loss", "accuracy", "never_logged"])
    loss = histories["loss"]
    assert list(loss.columns) == ["iteration", "stage", "step", "value"]
    assert len(loss) == 20 and list(loss["iteration"].unique()) == [0, 1]
    assert loss.iloc[0]["value"] == pytest.approx(0.673)
    assert histories["never_logged"].empty
    only_second = api_client.metric_history(1, "loss", iteration=1)
    assert set(only_second["iteration"]) == {1}


def test_reward_histories_pick_the_trainer_keys(stand_in):
    chosen, rejected = api_client.reward_histories(1)
    assert chosen["value"].iloc[-1] == pytest.approx(0.1)
    assert rejected["value"].iloc[-1] == pytest.approx(-0.2)


def test_pairs_filters_and_cursor_pages(stand_in):
    page = api_client.list_pairs(1, limit=4, include_total=True)
    assert page.total == 6 and len(page.items) == 4 and page.next_cursor == "0:3"
    second = api_client.list_pairs(1, limit=4, cursor=page.next_cursor)
    assert [p["id"] for p in second.items] == ["p-4", "p-5"] and second.next_cursor is None
    disagree = api_client.list_pairs(1, agreement="disagree")
    assert sorted(p["s_ref"] for p in disagree.items) == [-2.0, -0.5]
    assert [p["prompt_text"] for p in api_client.list_pairs(1, q="haiku").items] == [
        "Write a haiku about rain."
    ]
    with pytest.raises(ValueError, match="agreement"):
        api_client.list_pairs(1, agreement="yes")


def test_all_pairs_follows_cursors_up_to_the_cap(stand_in):
    assert len(api_client.all_pairs(1, page_size=2)) == 6
    assert len(api_client.all_pairs(1, page_size=2, cap=3)) == 3
    assert [p["iteration"] for p in api_client.all_pairs(1, iteration=1)] == [1, 1]


def test_pairs_frame_columns_for_charts(stand_in):
    frame = api_client.pairs_frame(api_client.all_pairs(1))
    first = frame.iloc[0]
    assert first["chosen_text"] == "2, 3 and 5." and first["s_ref"] == 3.5
    assert first["ref_chosen_logps"] - first["ref_rejected_logps"] == pytest.approx(3.5)
    assert first["length_diff"] == first["chosen_length"] - first["rejected_length"]


def test_export_pairs_is_the_raw_download(stand_in):
    lines = api_client.export_pairs(1, agreement="agree").decode().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["p-0", "p-1", "p-3", "p-5"]
    with pytest.raises(ValueError, match="fmt"):
        api_client.export_pairs(1, fmt="csv")


def test_sweep_with_normalised_children(stand_in):
    sweep = api_client.get_sweep(1)
    assert sweep["grid"] == {"objective.alpha": [0.03, 0.05], "objective.lambda_": [0.2, 0.5]}
    child = next(r for r in sweep["runs"] if r["id"] == 6)
    assert api_client.sweep_point_value(child, "objective.alpha") == 0.05
    assert api_client.sweep_point_value(child, "objective.beta") == 0.1  # not swept: read from the config


def test_create_sweep(stand_in):
    sweep = api_client.create_sweep(
        {
            "name": "g",
            "base_config": {"name": "b", "model": "tiny-random-llama"},
            "grid": {"objective.alpha": [0.01, 0.02]},
        }
    )
    assert len(sweep["runs"]) == 2


def test_objective_catalog_falls_back_when_the_api_has_none(stand_in):
    assert api_client.objective_catalog()["aipo"] == {"beta": 0.1, "alpha": 0.05, "lambda_": 0.2}


def test_objective_weight_formula_from_the_registry_route(stand_in, monkeypatch):
    assert api_client.objective_weight_formula("aipo") is None  # the stand-in has no /objectives
    served = [
        {"name": "aipo", "gradient_weight_formula": "σ(β((1+α)s_ref − s_θ))"},
        {"name": "ipo", "gradient_weight_formula": "1 − 2β(s_θ − s_ref)"},
    ]
    monkeypatch.setattr(api_client, "_get", lambda path, params=None, live=True: served)
    assert api_client.objective_weight_formula("ipo") == "1 − 2β(s_θ − s_ref)"
    assert api_client.objective_weight_formula("dpo") is None


def test_runs_frame_resolves_hyperparameters_and_latest_eval(stand_in):
    frame = api_client.runs_frame(api_client.list_runs().items).set_index("id")
    assert frame.loc[2, "beta"] == 0.1 and math.isnan(frame.loc[2, "alpha"])  # dpo has no alpha
    assert frame.loc[6, "lc_win_rate"] == 19.0 and frame.loc[6, "eval_iteration"] == 1


# ----------------------------------------------------------------------------- pure mapping


def test_headline_metrics_match_whole_segments_and_prefer_alpaca_eval():
    metrics = {
        "mt_bench/win_rate": 1.0,
        "alpaca_eval/win_rate": 2.0,
        "alpaca_eval/win_rate_se": 9.0,
        "alpaca_eval/lc_win_rate": 3.0,
    }
    result = api_client.headline_metrics(metrics)
    assert result["win_rate"] == 2.0 and result["lc_win_rate"] == 3.0
    assert math.isnan(result["avg_length"])
    nested = api_client.headline_metrics({"evaluate": {"alpaca_eval": {"avg_length": 812}}})
    assert nested["avg_length"] == 812.0
    assert api_client.headline_metrics({"win_rate": None})["win_rate"] != 0.0  # null → NaN, not 0


def test_field_errors_from_fastapi_and_other_shapes():
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
    assert api_client.field_errors({"errors": [{"path": "name", "message": "empty"}]}) == (
        FieldError("name", "empty"),
    )


def test_hyperparameters_prefer_explicit_over_defaults():
    run = {"objective": "simpo", "config": {"objective": {"name": "simpo", "beta": 3.0, "gamma": None}}}
    assert api_client.hyperparameters(run) == {"beta": 3.0, "gamma": 0.5}
    assert api_client.hyperparameters({"hyperparameters": {"beta": 1}}) == {"beta": 1.0}


def test_active_run_count(stand_in):
    assert api_client.active_run_count() == 1
    stand_in.data.runs[1]["status"] = "queued"
    api_client.clear_cache()
    assert api_client.active_run_count() == 2
