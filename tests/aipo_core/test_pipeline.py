"""Algorithm 1 end to end on real (tiny / SmolLM2) models: artifacts, resume, crash safety."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from aipo_cli.main import app
from aipo_core import artifacts
from aipo_core.config import RunConfig
from aipo_core.pipeline import STAGES, run, run_stage

TINY = {
    "name": "tiny",
    "model": "tiny-random-llama",
    "iterations": 2,
    "self_instruct": {"num_instructions": 3, "max_new_tokens": 16, "max_attempts_factor": 1},
    "generation": {"num_candidates": 2, "max_new_tokens": 12},
    "ranker": {"kind": "llm_judge", "model": "policy"},
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


def tiny_config(**overrides) -> RunConfig:
    return RunConfig.model_validate({**TINY, **overrides})


def iteration_files(root: Path, run_id: str, k: int) -> dict[str, Path]:
    d = artifacts.iteration_dir(root, run_id, k)
    return {
        "instructions": d / "instructions.jsonl",
        "candidates": d / "candidates.jsonl",
        "pairs": d / "pairs.jsonl",
        "policy": d / "policy" / "model.safetensors",
        "eval": d / "eval" / "alpaca_eval.jsonl",
        "analysis": d / "analysis.json",
    }


def test_aipo_run_local_two_iterations_on_tiny_model(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps(TINY))
    result = CliRunner().invoke(
        app, ["run", str(config), "--local", "--home", str(tmp_path / "home"), "--run-id", "r1"]
    )
    assert result.exit_code == 0, result.output
    assert "Per-iteration summary" in result.output
    for k in (0, 1):
        for name, path in iteration_files(tmp_path / "home", "r1", k).items():
            assert path.exists(), (k, name)
        pairs = artifacts.read_jsonl(iteration_files(tmp_path / "home", "r1", k)["pairs"])
        assert pairs and all("ref_chosen_logps" in p and "s_ref" in p for p in pairs)
    evaluated = json.loads(
        (artifacts.iteration_dir(tmp_path / "home", "r1", 1) / "stage_evaluate.json").read_text()
    )
    assert 0.0 <= evaluated["alpaca_eval/win_rate"] <= 100.0
    # Iteration 1 samples from θ_1 = iteration 0's policy, and trains it further.
    w0 = load_file(iteration_files(tmp_path / "home", "r1", 0)["policy"])
    w1 = load_file(iteration_files(tmp_path / "home", "r1", 1)["policy"])
    assert any(not torch.equal(w0[k], w1[k]) for k in w0)


def test_resume_skips_completed_stages_and_survives_a_crash_inside_training(tmp_path):
    cfg = tiny_config(iterations=1)
    for stage in STAGES[:3]:
        run_stage(stage, cfg, artifact_root=tmp_path, run_id="r", iteration=0)
    done = {
        s: (artifacts.iteration_dir(tmp_path, "r", 0) / f"stage_{s}.json").stat().st_mtime_ns
        for s in STAGES[:3]
    }

    class Crash(RuntimeError):
        pass

    def crash_on_first_step(event):
        if event.get("kind") == "metric" and "loss" in event.get("values", {}):
            raise Crash("worker died mid-training")

    with pytest.raises(Crash):
        run_stage("train", cfg, artifact_root=tmp_path, run_id="r", iteration=0, sink=crash_on_first_step)
    files = iteration_files(tmp_path, "r", 0)
    assert not files["policy"].parent.exists(), "a crashed train stage must leave no policy folder"
    assert not (files["policy"].parents[1] / "stage_train.json").exists()

    history = run(cfg, artifact_root=tmp_path, run_id="r")
    after = {
        s: (artifacts.iteration_dir(tmp_path, "r", 0) / f"stage_{s}.json").stat().st_mtime_ns
        for s in STAGES[:3]
    }
    assert after == done, "completed stages must not run again"
    assert files["policy"].exists() and history[0]["train"]["steps"] == 2
    leftovers = [p.name for p in files["policy"].parents[1].iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_initial_pairs_replace_sampling_in_iteration_zero(tmp_path):
    dataset = tmp_path / "prefs.jsonl"
    rows = [
        {
            "prompt": f"Name a colour, take {i}.",
            "chosen": "Blue.",
            "rejected": "I will not answer that question.",
        }
        for i in range(4)
    ]
    dataset.write_text("\n".join(json.dumps(r) for r in rows))
    cfg = tiny_config(iterations=1, initial_pairs=str(dataset))
    for stage in STAGES[:3]:
        summary = run_stage(stage, cfg, artifact_root=tmp_path, run_id="uf", iteration=0)
    assert summary["imported"] == 4 and summary["pairs"] == 4
    pairs = artifacts.read_jsonl(iteration_files(tmp_path, "uf", 0)["pairs"])
    assert [p["chosen"][0]["content"] for p in pairs] == ["Blue."] * 4
    assert all(p["chosen_length"] > 0 and isinstance(p["ref_rejected_logps"], float) for p in pairs)


def test_stage_and_iteration_are_validated(tmp_path):
    with pytest.raises(ValueError, match="stage 'sample' is unknown"):
        run_stage("sample", tiny_config(), artifact_root=tmp_path, run_id="r", iteration=0)
    with pytest.raises(ValueError, match="iteration 2 is outside 0..1"):
        run_stage("train", tiny_config(), artifact_root=tmp_path, run_id="r", iteration=2)


@pytest.mark.slow
def test_one_iteration_on_smollm2_with_self_rewarding_judge(tmp_path):
    cfg = RunConfig.model_validate(
        {
            "name": "smol",
            "model": "smollm2-135m-instruct",
            "iterations": 1,
            "prompt_pool": str(_small_pool(tmp_path)),
            "self_instruct": {"num_instructions": 2, "max_new_tokens": 24, "max_attempts_factor": 1},
            "generation": {"num_candidates": 2, "max_new_tokens": 24, "temperature": 0.9},
            "ranker": {"kind": "llm_judge", "model": "policy"},
            "objective": {"name": "aipo", "beta": 0.1, "alpha": 0.05, "lambda_": 0.2},
            "training": {
                "batch_size": 2,
                "max_steps": 1,
                "warmup_ratio": 0.0,
                "learning_rate": 1e-5,
                "max_prompt_length": 128,
                "max_length": 192,
            },
            "evaluation": {"benchmarks": ["alpaca_eval"], "limit": 2, "max_new_tokens": 24},
        }
    )
    history = run(cfg, artifact_root=tmp_path, run_id="smol")
    files = iteration_files(tmp_path, "smol", 0)
    assert artifacts.read_jsonl(files["pairs"])
    assert history[0]["evaluate"]["alpaca_eval/n"] == 2
    from aipo_core.models import resolve_model_path

    base = load_file(Path(resolve_model_path("smollm2-135m-instruct")) / "model.safetensors")
    trained = load_file(files["policy"])
    assert any(not torch.equal(base[k], trained[k]) for k in trained if k in base)


def _small_pool(tmp_path: Path) -> Path:
    pool = tmp_path / "pool.jsonl"
    tasks = [
        "Give three tips for staying healthy.",
        "Explain why the sky is blue in two sentences.",
        "Suggest a name for a bakery.",
        "Write a haiku about autumn.",
        "List three uses of a paperclip.",
        "Describe a cat to someone who has never seen one.",
        "Translate 'good morning' into French.",
        "Summarize the plot of Cinderella in one sentence.",
    ]
    pool.write_text("\n".join(json.dumps({"instruction": t}) for t in tasks))
    return pool


def test_every_stage_records_the_placement_it_loaded_with(tmp_path):
    """On this CPU host: fp32 weights everywhere, one process; the summary says so per stage."""
    cfg = tiny_config(iterations=1)
    history = run(cfg, artifact_root=tmp_path, run_id="p")
    expected = {
        "device": "cpu",
        "dtype": "float32",
        "compute_dtype": "float32",
        "num_processes": 1,
        "strategy": "single",
        "gpu_count": 0,
        "gpu_name": None,
        "gpu_memory_gib": None,
    }
    for stage in STAGES:
        assert history[0][stage]["placement"] == expected, stage
    assert history[0]["train"]["placement"]["compute_dtype"] == "float32"


def test_bf16_placement_loads_inference_stages_in_bf16_and_trains_fp32_with_autocast(tmp_path):
    cfg = tiny_config(iterations=1, training={**TINY["training"], "precision": "bf16"})
    history = run(cfg, artifact_root=tmp_path, run_id="b")
    dtypes = {
        stage: (history[0][stage]["placement"]["dtype"], history[0][stage]["placement"]["compute_dtype"])
        for stage in STAGES
    }
    assert dtypes == {
        "self_instruct": ("bfloat16", "bfloat16"),
        "generate": ("bfloat16", "bfloat16"),
        "rank": ("float32", "bfloat16"),
        "train": ("float32", "bfloat16"),
        "evaluate": ("bfloat16", "bfloat16"),
    }


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_step0_log_ratio_is_zero_for_a_real_smollm2_iteration(tmp_path, precision):
    """The rank stage scores s_ref with the trainer's placement, so at step 0 the policy's log-probs
    equal the stored reference ones: rewards = β·(log πθ − log π_ref) ≈ 0 for every pair."""
    cfg = RunConfig.model_validate(
        {
            "name": "smol-s0",
            "model": "smollm2-135m-instruct",
            "iterations": 1,
            "prompt_pool": str(_small_pool(tmp_path)),
            "self_instruct": {"num_instructions": 4, "max_new_tokens": 24, "max_attempts_factor": 1},
            "generation": {"num_candidates": 2, "max_new_tokens": 32, "temperature": 0.9},
            "objective": {"name": "aipo", "beta": 0.1},
            "training": {
                "batch_size": 4,
                "max_steps": 1,
                "warmup_ratio": 0.0,
                "learning_rate": 1e-6,
                "max_prompt_length": 128,
                "max_length": 192,
                "precision": precision,
            },
            "evaluation": {"benchmarks": ["alpaca_eval"], "limit": 1, "max_new_tokens": 8},
        }
    )
    events: list[dict] = []
    training_batch = cfg.training.batch_size
    for stage in STAGES[:4]:
        summary = run_stage(stage, cfg, artifact_root=tmp_path, run_id="s0", iteration=0, sink=events.append)
    assert summary["placement"]["compute_dtype"] == ("bfloat16" if precision == "bf16" else "float32")
    pairs = artifacts.read_jsonl(iteration_files(tmp_path, "s0", 0)["pairs"])
    assert pairs and any(abs(p["s_ref"]) > 0.1 for p in pairs)  # s_ref itself is not trivially 0
    first = next(e["values"] for e in events if e.get("kind") == "metric" and "rewards_chosen" in e["values"])
    assert summary["num_pairs"] <= training_batch == 4  # one batch: the trainer's step 0 sees these pairs
    beta = 0.1
    # Same weights, same placement (dtype, autocast), same tokenization and batch shape: the
    # trainer's step-0 log-probs are bit-identical to the stored ones. (bench/sref_placement.py
    # measures bf16's batch-shape noise, ~0.3 nats per pair, and the offset of a mismatched
    # placement, ~0.2 nats, which this check would catch.)
    tolerance = 1e-6
    for key in ("rewards_chosen", "rewards_rejected", "margins"):
        assert abs(first[key] / beta) < tolerance, (key, first)
