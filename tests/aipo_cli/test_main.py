"""The `aipo` verbs that need no services: winrate (contract of DESIGN.md §3) and validate."""

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aipo_cli.main import app

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "benchmarks" / "alpaca_eval"
runner = CliRunner()


def published() -> dict[str, dict[str, str]]:
    with open(SHARED / "leaderboard_subset.csv", newline="") as fh:
        return {row["model"]: row for row in csv.DictReader(fh)}


@pytest.mark.parametrize(
    "model", ["gpt-3.5-turbo-1106", "gpt-3.5-turbo-1106_concise", "gpt-3.5-turbo-1106_verbose"]
)
def test_winrate_prints_one_json_object_matching_the_leaderboard(model):
    result = runner.invoke(
        app, ["winrate", str(SHARED / "annotations" / f"{model}.json"), "--format", "alpaca_eval"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    row = published()[model]
    assert report["n"] == 805
    assert report["win_rate"] == pytest.approx(float(row["win_rate"]), abs=0.01)
    assert report["lc_win_rate"] == pytest.approx(float(row["length_controlled_winrate"]), abs=5.0)
    assert report["avg_length"] == pytest.approx(float(row["avg_length"]), abs=1.0)


def test_winrate_missing_file_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["winrate", str(tmp_path / "nope.json")])
    assert result.exit_code == 2
    assert "no such annotations file" in result.output


def test_validate_names_the_bad_field(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(
        "name: x\nmodel: tiny-random-llama\nobjective: {name: dpo, alpha: 0.1}\ntraining: {batch_size: 0}\n"
    )
    result = runner.invoke(app, ["validate", str(config)])
    assert result.exit_code == 2
    assert "training.batch_size" in result.output
    assert "alpha: objective 'dpo' does not use it" in result.output


def test_validate_rejects_unknown_keys(tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text("name: x\nmodel: tiny-random-llama\ngeneration: {num_candidate: 4}\n")
    result = runner.invoke(app, ["validate", str(config)])
    assert result.exit_code == 2
    assert "generation.num_candidate" in result.output
