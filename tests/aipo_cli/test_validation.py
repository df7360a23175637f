"""`aipo validate` reads what the config points to: every row of its files, its models, benchmarks."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from aipo_cli.main import app

GOOD_PAIR = {"prompt": "Name a prime.", "chosen": "7", "rejected": "8"}


def write_config(tmp_path: Path, **fields) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "model": "tiny-random-llama", **fields}))
    return path


def validate(*args: str):
    return CliRunner().invoke(app, ["validate", *args], env={"COLUMNS": "200"})


def test_validate_fails_on_a_malformed_pairs_file_naming_line_6(tmp_path) -> None:
    """The config has the right shape; its file does not: shape-only validation said 'valid'."""
    rows = [{**GOOD_PAIR, "id": i} for i in range(9)]
    del rows[5]["rejected"]
    pairs = tmp_path / "file.jsonl"
    pairs.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = validate(str(write_config(tmp_path, initial_pairs=str(pairs))))
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = result.stdout.splitlines()
    (pairs_line,) = [line for line in lines if "initial_pairs" in line]
    assert pairs_line.split()[:2] == ["error", "initial_pairs"] and pairs_line.endswith("1 row bad, 8 good")
    assert f"{pairs}:6: missing field 'rejected'" in lines[lines.index(pairs_line) + 1]
    assert result.stderr == f"error: {tmp_path / 'run.yaml'}: initial_pairs cannot be used (see above)\n"


def test_validate_passes_a_good_config_and_reports_each_field(tmp_path) -> None:
    pool = tmp_path / "pool.jsonl"
    pool.write_text('{"instruction": "Name a prime."}\n{"prompt": "Name a colour."}\n')
    result = validate(str(write_config(tmp_path, prompt_pool=str(pool))), "--show-config")
    assert result.exit_code == 0, result.output
    verdicts = {line.split()[1]: line.split()[0] for line in result.stdout.splitlines()[:5]}
    assert verdicts == {
        "model": "ok",
        "ranker.model": "ok",
        "evaluation.judge.model": "ok",
        "prompt_pool": "ok",
        "evaluation.benchmarks": "ok",
    }
    assert "2 prompts" in result.stdout and "alpaca_eval 32/805" in result.stdout
    assert f"{tmp_path / 'run.yaml'}: valid, and everything it names can be used" in result.stdout
    shown = json.loads(result.stdout[result.stdout.index("{") :])
    assert shown["training"]["batch_size"] == 8  # every default filled in


def test_validate_names_models_that_do_not_resolve(tmp_path) -> None:
    (tmp_path / "ckpt").mkdir()
    config = write_config(
        tmp_path, model=str(tmp_path / "ckpt"), ranker={"kind": "reward_model", "model": "a b"}
    )
    result = validate(str(config))
    assert result.exit_code == 2
    assert "model, ranker.model cannot be used" in result.stderr
    assert "has no readable config.json (not a checkpoint folder)" in result.stdout
    assert "'a b' is neither a built-in model" in result.stdout
