"""`aipo study length` end to end on the tiny random Llama: both objectives from one base."""

import json
import xml.etree.ElementTree as ET

import pytest
from typer.testing import CliRunner

from aipo_cli.main import app
from aipo_cli.study import (
    STUDY_OBJECTIVES,
    bundled_config,
    mean_and_se,
    objective_configs,
    table_markdown,
)
from aipo_core import artifacts
from aipo_core.config import RunConfig
from aipo_core.models import load_model_and_tokenizer

TINY_STUDY = {
    "name": "tiny-study",
    "model": "tiny-random-llama",
    "iterations": 2,
    "self_instruct": {"num_instructions": 3, "max_new_tokens": 16, "max_attempts_factor": 1},
    # Random weights almost never emit EOS: keep the cut-off candidates, or no pair survives.
    "generation": {"num_candidates": 3, "max_new_tokens": 12, "keep_unfinished": True},
    "ranker": {
        "kind": "length_biased",
        "model": "tiny-random-llama",
        # A full point per token: any length difference outweighs the judge's preference (in [0, 1]).
        "length_bias": {"judge": "llm_judge", "bonus": 1.0, "unit": "token"},
    },
    "objective": {"name": "aipo"},
    "training": {
        "batch_size": 2,
        "max_steps": 2,
        "learning_rate": 1e-3,
        "max_prompt_length": 96,
        "max_length": 128,
    },
    "evaluation": {"benchmarks": ["alpaca_eval"], "limit": 2, "max_new_tokens": 8},
}


def test_configs_differ_only_in_objective_and_name():
    configs = objective_configs(bundled_config())
    assert list(configs) == ["dpo", "aipo"]
    dumps = [c.model_dump() for c in configs.values()]
    assert [d.pop("objective")["name"] for d in dumps] == ["dpo", "aipo"]
    assert [d.pop("name") for d in dumps] == ["length-study-dpo", "length-study-aipo"]
    assert dumps[0] == dumps[1]
    assert configs["aipo"].objective.resolved() == {"beta": 0.1, "alpha": 0.05, "lambda_": 0.2}
    # The bundled study: a length-biased ranker, a fixed judge without the bias, >= 3 iterations.
    base = bundled_config()
    assert base.ranker.kind == "length_biased" and base.evaluation.judge.model == "base"
    assert base.iterations >= 3


def test_mean_and_se():
    assert mean_and_se([]) == (None, None)
    assert mean_and_se([4.0]) == (4.0, None)
    mean, se = mean_and_se([1.0, 3.0])
    assert mean == 2.0 and se == pytest.approx(1.0)  # stdev √2 over √2


def test_study_length_runs_both_objectives_from_the_same_base(tmp_path):
    config = tmp_path / "study.yaml"
    config.write_text(json.dumps(TINY_STUDY))
    out, home = tmp_path / "out", tmp_path / "home"
    result = CliRunner().invoke(
        app, ["study", "length", str(config), "--out", str(out), "--home", str(home), "--study-id", "s"]
    )
    assert result.exit_code == 0, result.output
    table = json.loads((out / "table.json").read_text())
    rows = table["rows"]
    # One row per objective and θ_0, θ_1, θ_2, in that order.
    assert [(r["objective"], r["model"]) for r in rows] == [
        (o, f"θ_{j}") for o in STUDY_OBJECTIVES for j in range(TINY_STUDY["iterations"] + 1)
    ]
    assert table["meta"]["objectives"] == {
        "dpo": {"name": "dpo", "beta": 0.1},
        "aipo": {"name": "aipo", "beta": 0.1, "alpha": 0.05, "lambda_": 0.2},
    }
    configs = {
        o: RunConfig.model_validate(json.loads((home / "runs" / f"s-{o}" / "config.json").read_text()))
        for o in STUDY_OBJECTIVES
    }
    assert {o: c.objective.name for o, c in configs.items()} == {"dpo": "dpo", "aipo": "aipo"}
    # The same base: θ_0's evaluation is shared, not repeated, and both tables show it.
    base_evals = [
        artifacts.read_jsonl(home / "runs" / f"s-{o}" / "iter_0" / "eval" / "base" / "alpaca_eval.jsonl")
        for o in STUDY_OBJECTIVES
    ]
    assert base_evals[0] and base_evals[0] == base_evals[1]
    base = {r["objective"]: r for r in rows if r["policy_index"] == 0}
    for key in ("avg_tokens", "avg_chars", "win_rate", "win_rate_se"):
        assert base["dpo"][key] == base["aipo"][key], key
    # ... and iteration 0's pairs are the very same pairs (shared, not re-sampled).
    pairs = [
        artifacts.read_jsonl(home / "runs" / f"s-{o}" / "iter_0" / "pairs.jsonl") for o in STUDY_OBJECTIVES
    ]
    assert pairs[0] and pairs[0] == pairs[1]
    trained = [r for r in rows if r["iteration"] is not None]
    assert all(r["pairs"] > 0 and r["win_rate"] is not None and r["avg_tokens"] is not None for r in trained)
    assert all("s_ref_length_gap_spearman_ci95" in r for r in trained)
    # The length-biased ranker never chose the shorter candidate.
    _, tokenizer = load_model_and_tokenizer("tiny-random-llama", cache_dir=home / "models")
    for pair in pairs[0]:
        chosen, rejected = (
            tokenizer.encode(pair[side][0]["content"], add_special_tokens=False)
            for side in ("chosen", "rejected")
        )
        assert len(chosen) >= len(rejected)
    # table.md: a header, a rule and one line per row, 10 columns each.
    lines = [line for line in (out / "table.md").read_text().splitlines() if line.startswith("|")]
    assert len(lines) == 2 + len(rows) and all(line.count("|") == 11 for line in lines)
    assert (out / "table.md").read_text() == table_markdown(rows)
    # --report-only writes the same table from the artifacts, running nothing.
    again = CliRunner().invoke(
        app,
        [
            "study",
            "length",
            str(config),
            "--out",
            str(tmp_path / "again"),
            "--home",
            str(home),
            "--study-id",
            "s",
        ]
        + ["--report-only"],
    )
    assert again.exit_code == 0, again.output
    assert (tmp_path / "again" / "table.md").read_text() == (out / "table.md").read_text()
    svg = ET.parse(out / "length_study.svg").getroot()
    titles = [t.text for t in svg.iter("{http://www.w3.org/2000/svg}text") if t.text]
    assert any("avg response length" in t for t in titles) and any("win rate" in t for t in titles)
    assert len(list(svg.iter("{http://www.w3.org/2000/svg}polyline"))) >= 4  # 2 objectives × 2 panels
