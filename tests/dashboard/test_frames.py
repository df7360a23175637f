"""frames: the API's JSON (served by the real, seeded API) as the tables and chart data pages show."""

from __future__ import annotations

import math

import pytest

from dashboard import api_client, frames
from tests.dashboard.seeded_backend import SeededApi


def test_hyperparameters_fill_the_registry_defaults(backend: SeededApi) -> None:
    """What the run detail header shows: the config's values over the registry's defaults."""
    objectives = api_client.objectives()
    simpo = next(o for o in objectives if o["name"] == "simpo")
    run = {"config": {"objective": {"name": "simpo", "beta": 3.0, "gamma": None}}}
    assert frames.hyperparameters(run, objectives) == {"beta": 3.0, "gamma": simpo["defaults"]["gamma"]}
    assert frames.hyperparameters(api_client.get_run(2), objectives) == {"beta": 0.1}
    assert "alpha" in frames.hyperparameter_names(objectives)
    assert frames.objective_defaults(objectives)["simpo"] == simpo["defaults"]
    assert frames.weight_formula(objectives, "aipo") == next(
        o["gradient_weight_formula"] for o in objectives if o["name"] == "aipo"
    )


def test_runs_frame_has_hyperparameters_and_the_latest_evaluation(backend: SeededApi) -> None:
    runs = api_client.list_runs().items
    frame = frames.runs_frame(runs, api_client.objectives()).set_index("id")
    assert frame.loc[2, "beta"] == 0.1 and math.isnan(frame.loc[2, "alpha"])  # dpo has no alpha
    assert (frame.loc[6, "alpha"], frame.loc[6, "lambda_"]) == (0.05, 0.5)
    latest = next(r for r in runs if r["id"] == 6)["latest_evaluation"]
    assert frame.loc[6, "lc_win_rate"] == latest["lc_win_rate"] and frame.loc[6, "eval_iteration"] == 1
    assert frame.loc[6, "lc_win_rate_se"] == latest["lc_win_rate_se"] and frame.loc[6, "n"] == 40
    assert frame.loc[2, "eval_iteration"] == 0 and frame.loc[2, "judge_label"] == latest["judge_label"]


def test_a_run_without_evaluations_has_empty_eval_columns(backend: SeededApi) -> None:
    new = api_client.create_run({"name": "fresh", "model": "tiny-random-llama"})
    row = frames.runs_frame([new], api_client.objectives()).iloc[0]
    assert math.isnan(row["win_rate"]) and math.isnan(row["eval_iteration"]) and row["judge_label"] is None


def test_a_missing_field_is_an_error_not_a_guess(backend: SeededApi) -> None:
    run = dict(api_client.get_run(1))
    del run["latest_evaluation"]
    with pytest.raises(KeyError, match="latest_evaluation"):
        frames.runs_frame([run], api_client.objectives())


def test_iteration_rows_carry_the_evaluation_with_its_errors(backend: SeededApi) -> None:
    body = api_client.run_iterations(2)
    rows = frames.iteration_rows(body, frames.headline_benchmark(api_client.get_run(2)))
    assert [r["iteration"] for r in rows] == [0, 1]
    served = body["items"][0]["evaluations"]["alpaca_eval"]
    assert (rows[0]["win_rate"], rows[0]["win_rate_se"]) == (served["win_rate"], served["win_rate_se"])
    assert rows[0]["agreement_rate"] == 0.75 and rows[0]["pairs"] == 4
    assert math.isnan(rows[1]["win_rate"])  # iteration 1 not evaluated yet


def test_iterations_frame_overlays_runs(backend: SeededApi) -> None:
    bodies = {label: (api_client.run_iterations(i), "alpaca_eval") for i, label in ((1, "one"), (2, "two"))}
    frame = frames.iterations_frame(bodies)
    assert list(frame["run"]) == ["one", "one", "two", "two"]
    assert frame["avg_length"].notna().sum() == 3


def test_history_frame_is_sorted_with_nan_for_null(backend: SeededApi) -> None:
    points = api_client.metric_histories(1, ["loss"])["loss"]
    frame = frames.history_frame(reversed(points))
    assert list(frame.columns) == frames.POINT_COLUMNS and len(frame) == 20
    assert list(frame["iteration"].unique()) == [0, 1] and frame.iloc[0]["step"] == 1
    assert math.isnan(frames.history_frame([{**points[0], "value": None}]).iloc[0]["value"])


def test_pairs_frame_columns_for_charts(backend: SeededApi) -> None:
    frame = frames.pairs_frame(api_client.all_pairs(1))
    first = frame.iloc[0]
    assert first["chosen"] == "2, 3 and 5." and first["s_ref"] == 3.5 and first["uid"] == "p-0"
    assert first["ref_chosen_logps"] - first["ref_rejected_logps"] == pytest.approx(3.5)
    assert first["length_diff"] == first["chosen_length"] - first["rejected_length"]


def test_sweep_point_value(backend: SeededApi) -> None:
    child = next(r for r in api_client.get_sweep(1)["runs"] if r["id"] == 6)
    assert frames.sweep_point_value(child, "objective.alpha") == 0.05


def test_run_evaluations_lists_theta_0_then_each_policy(backend: SeededApi) -> None:
    """Run 1: θ_0..θ_2 judged (the seed), in policy order, each as the API served it."""
    body = api_client.run_iterations(1)
    evaluations = frames.run_evaluations(body)
    assert [e["policy_index"] for e in evaluations] == [0, 1, 2]
    assert evaluations[0] == body["base_evaluations"]["alpaca_eval"]
    assert evaluations[2] == body["items"][1]["evaluations"]["alpaca_eval"]
