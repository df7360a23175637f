"""The `aipo` verbs that need no services: winrate (contract of docs/architecture.md §9) and validate."""

import json

import pytest
from typer.testing import CliRunner

from aipo_cli.main import app
from tests.data.alpaca_eval.published import MODELS, leaderboard, write_alpaca_eval_annotations

runner = CliRunner()


@pytest.mark.parametrize("model", MODELS)
def test_winrate_prints_one_json_object_matching_the_leaderboard(model, tmp_path):
    path = write_alpaca_eval_annotations(model, tmp_path / f"{model}.json")
    result = runner.invoke(app, ["winrate", str(path), "--format", "alpaca_eval"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    row = leaderboard()[model]
    assert report["n"] == 805
    assert report["win_rate"] == pytest.approx(float(row["win_rate"]), abs=1e-9)
    assert report["win_rate_se"] == pytest.approx(float(row["standard_error"]), abs=1e-9)
    assert report["avg_length"] == pytest.approx(float(row["avg_length"]), abs=1.0)
    assert report["judge"] == "alpaca_eval:weighted_alpaca_eval_gpt4_turbo"
    assert report["slope_source"] == "prior" and report["lc_unavailable_reason"] is None
    assert report["lc_win_rate"] == pytest.approx(float(row["length_controlled_winrate"]), abs=2.0)
    assert report["lc_win_rate_se"] > 0


def test_winrate_judge_option_decides_the_slope(tmp_path):
    """Another judge: no published slope; estimated from the file (805 judgements identify it)."""
    path = write_alpaca_eval_annotations(MODELS[0], tmp_path / "a.json")
    result = runner.invoke(app, ["winrate", str(path), "--judge", "llm_judge:my-judge"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["judge"] == "llm_judge:my-judge" and report["slope_source"] == "estimated"
    assert report["length_slope_se"] is not None and report["lc_win_rate_se"] is not None


def test_winrate_reports_an_unavailable_lc_with_its_reason(tmp_path):
    path = tmp_path / "few.jsonl"
    records = [
        {"preference": 1.0 + (i % 2), "output_chars": 100 + 10 * i, "baseline_chars": 300} for i in range(10)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    result = runner.invoke(app, ["winrate", str(path), "--format", "aipo"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["win_rate"] == 50.0 and report["lc_win_rate"] is None
    assert report["lc_win_rate_se"] is None and "too few judgements" in report["lc_unavailable_reason"]


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


@pytest.mark.parametrize("preset", [None, "ACTIVE"])
def test_the_cli_chooses_openmp_waiting_before_torch_loads(preset):
    """OpenMP reads its waiting variables once, when torch loads: the CLI module must set them
    without importing torch (from the load it sees), and keep a value the user chose."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    if preset is not None:
        env["OMP_WAIT_POLICY"] = preset
    probe = (
        "import os, sys, aipo_cli.main; "
        "print('torch' in sys.modules, os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))"
    )
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    torch_loaded, policy, spin = out.stdout.split()
    assert torch_loaded == "False"
    if preset is not None:
        assert (policy, spin) == (preset, "None")
    else:  # one of the two, whichever the machine's load asked for
        assert (policy, spin) in (("PASSIVE", "None"), ("None", "20000"))
