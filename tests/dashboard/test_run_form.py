"""Launch-page config shaping."""

import pytest

from dashboard import run_form
from dashboard.api_client import FieldError


def test_starting_config_drops_unused_hyperparameters_of_a_stored_run():
    stored = {
        "name": "r",
        "objective": {"name": "dpo", "beta": 0.1, "alpha": None, "lambda_": None, "gamma": None},
    }
    config = run_form.starting_config(stored)
    assert config["objective"] == {"name": "dpo", "beta": 0.1}
    assert stored["objective"]["alpha"] is None  # the source is not modified
    assert run_form.starting_config(None) == run_form.DEFAULT_CONFIG
    assert run_form.starting_config(None) is not run_form.DEFAULT_CONFIG


def test_merge_is_recursive_and_copies():
    base = {"training": {"batch_size": 8, "epochs": 1}, "name": "a"}
    merged = run_form.merge(base, {"training": {"epochs": 2}, "name": "b"})
    assert merged == {"training": {"batch_size": 8, "epochs": 2}, "name": "b"}
    assert base["training"]["epochs"] == 1


def test_objective_section_keeps_used_and_set_values_only():
    section = run_form.objective_section("simpo", {"beta": 2, "gamma": None, "alpha": 0.1}, ["beta", "gamma"])
    assert section == {"name": "simpo", "beta": 2.0}


def test_hyperparameter_defaults_follow_the_config_for_its_objective():
    catalog = {"aipo": {"beta": 0.1, "alpha": 0.05, "lambda_": 0.2}, "dpo": {"beta": 0.1}}
    config = {"objective": {"name": "aipo", "alpha": 0.07}}
    assert run_form.hyperparameter_defaults("aipo", config, catalog) == {
        "beta": 0.1,
        "alpha": 0.07,
        "lambda_": 0.2,
    }
    assert run_form.hyperparameter_defaults("dpo", config, catalog) == {"beta": 0.1}


def test_yaml_round_trip_and_errors():
    assert run_form.parse_yaml(run_form.to_yaml(run_form.DEFAULT_CONFIG)) == run_form.DEFAULT_CONFIG
    with pytest.raises(ValueError, match=r"config: not valid YAML \(line 3"):
        run_form.parse_yaml("a: 1\nb: [1, 2\nc: 3\n")
    with pytest.raises(ValueError, match="grid: must be a mapping"):
        run_form.parse_yaml("- 1\n", what="grid")


def test_errors_under_matches_whole_path_segments():
    errors = [FieldError("training.epochs", "x"), FieldError("training_extra", "y"), FieldError("name", "z")]
    assert run_form.errors_under(errors, "training") == [errors[0]]
    assert run_form.errors_under(errors, "name", "training_extra") == errors[1:]


def test_submission_key_follows_the_request_and_the_session():
    body = {"name": "a", "training": {"epochs": 1.0, "batch_size": 8}}
    reordered = {"training": {"batch_size": 8, "epochs": 1.0}, "name": "a"}
    key = run_form.submission_key("salt", "run", body)
    assert key == run_form.submission_key("salt", "run", reordered)  # same request, same key
    assert key != run_form.submission_key("salt", "run", {**body, "name": "b"})  # a field changed
    assert key != run_form.submission_key("other-session", "run", body)
    assert key != run_form.submission_key("salt", "sweep", body)
    assert len(key) == 48 and key.isalnum()
