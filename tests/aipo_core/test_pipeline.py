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
from aipo_core.data import load_benchmark
from aipo_core.decontamination import Decontaminator
from aipo_core.models import load_model_and_tokenizer
from aipo_core.pipeline import STAGES, run, run_stage

TINY = {
    "name": "tiny",
    "model": "tiny-random-llama",
    "iterations": 2,
    "self_instruct": {"num_instructions": 3, "max_new_tokens": 16, "max_attempts_factor": 1},
    # Random weights almost never emit EOS: keep the cut-off candidates, or no pair survives.
    "generation": {"num_candidates": 2, "max_new_tokens": 12, "keep_unfinished": True},
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
    # Iteration 1 trains on no instruction of iteration 0 and on no benchmark prompt.
    texts = [
        {
            r["instruction"]
            for r in artifacts.read_jsonl(iteration_files(tmp_path / "home", "r1", k)["instructions"])
        }
        for k in (0, 1)
    ]
    assert texts[0] and texts[1] and not texts[0] & texts[1]
    assert not any(Decontaminator().reason(t) for t in texts[0] | texts[1])
    summary = json.loads(
        (artifacts.iteration_dir(tmp_path / "home", "r1", 1) / "stage_self_instruct.json").read_text()
    )
    assert summary["decontaminated"] == sum(
        summary[f"decontaminated_{r}"] for r in ("benchmark_exact", "benchmark_similar", "earlier_iteration")
    )


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
    """Imported pairs are decontaminated and cut to what training takes whole (max_length 128)."""
    dataset = tmp_path / "prefs.jsonl"
    rows = [
        {
            "prompt": f"Name a colour, take {i}.",
            "chosen": "Blue.",
            "rejected": "I will not answer that question.",
        }
        for i in range(4)
    ]
    rows.append({"prompt": load_benchmark("alpaca_eval")[600].instruction, "chosen": "A.", "rejected": "B."})
    rows.append({"prompt": "Name a colour.", "chosen": "Blue. " * 100, "rejected": "Red."})
    dataset.write_text("\n".join(json.dumps(r) for r in rows))
    cfg = tiny_config(iterations=1, initial_pairs=str(dataset))
    for stage in STAGES[:3]:
        summary = run_stage(stage, cfg, artifact_root=tmp_path, run_id="uf", iteration=0)
    assert summary["imported"] == 6 and summary["pairs"] == 4
    assert summary["decontaminated"] == summary["decontaminated_benchmark_exact"] == 1
    assert summary["dropped_response_too_long"] == 1 and summary["dropped_prompt_too_long"] == 0
    pairs = artifacts.read_jsonl(iteration_files(tmp_path, "uf", 0)["pairs"])
    assert [p["chosen"][0]["content"] for p in pairs] == ["Blue."] * 4
    assert all(p["chosen_length"] > 0 and isinstance(p["ref_rejected_logps"], float) for p in pairs)


def test_unfinished_candidates_are_excluded_and_counted_by_the_rank_stage(tmp_path):
    cfg = tiny_config(iterations=1, generation={"num_candidates": 2, "max_new_tokens": 12})
    summaries = {s: run_stage(s, cfg, artifact_root=tmp_path, run_id="u", iteration=0) for s in STAGES[:3]}
    candidates = artifacts.read_jsonl(iteration_files(tmp_path, "u", 0)["candidates"])
    flags = [r["finished"] for r in candidates]
    assert all(len(f) == 2 and all(isinstance(x, bool) for x in f) for f in flags)
    cut_off = sum(not x for f in flags for x in f)
    assert cut_off > 0 and summaries["generate"]["unfinished"] == cut_off
    rank = summaries["rank"]
    assert rank["unfinished"] == cut_off
    assert rank["dropped_unfinished"] == sum(sum(f) < 2 for f in flags)
    pairs = artifacts.read_jsonl(iteration_files(tmp_path, "u", 0)["pairs"])
    kept_ids = {r["id"] for r in candidates if all(r["finished"])}
    assert {p["id"] for p in pairs} <= kept_ids
    assert rank["chat_template"] == "model" and rank["imposed_chat_template"] == 0


def test_later_iteration_skips_benchmark_and_earlier_prompts_and_records_an_imposed_template(
    tmp_path, caplog
):
    """Iteration 1 with a user pool holding two benchmark prompts, whose four clean prompts were
    all iteration 0's instructions; θ_1 is the tiny model saved without a chat template."""
    alpaca, mt_bench = load_benchmark("alpaca_eval")[700], load_benchmark("mt_bench")[3]
    clean = [
        "Give three tips for staying healthy.",
        "Suggest a name for a bakery.",
        "Write a haiku about autumn.",
        "List three uses of a paperclip.",
    ]
    pool = tmp_path / "pool.jsonl"
    rows = [{"instruction": t} for t in clean] + [
        {"prompt": alpaca.instruction},
        {"prompt": mt_bench.turns[1].upper()},
    ]
    pool.write_text("\n".join(json.dumps(r) for r in rows))
    iter0 = artifacts.iteration_dir(tmp_path, "h", 0)
    model, tokenizer = load_model_and_tokenizer("tiny-random-llama")
    tokenizer.chat_template = None
    model.save_pretrained(iter0 / "policy")
    tokenizer.save_pretrained(iter0 / "policy")
    artifacts.write_jsonl_atomic(
        iter0 / "instructions.jsonl",
        [{"id": f"pool-{i:05d}", "instruction": t, "source": "pool"} for i, t in enumerate(clean)],
    )
    cfg = tiny_config(
        prompt_pool=str(pool),
        self_instruct={"num_instructions": 4, "max_new_tokens": 16, "max_attempts_factor": 1},
    )
    summary = run_stage("self_instruct", cfg, artifact_root=tmp_path, run_id="h", iteration=1)
    instructions = [
        r["instruction"] for r in artifacts.read_jsonl(iteration_files(tmp_path, "h", 1)["instructions"])
    ]
    assert not set(instructions) & set(clean)
    assert not any(Decontaminator().reason(t) for t in instructions)
    assert summary["decontaminated_pool"] == 2 and summary["decontaminated_benchmark_exact"] == 2
    assert summary["from_pool"] == 0 and summary["generated"] < 4
    # Every clean pool prompt was offered as a top-up and refused.
    assert summary["decontaminated_earlier_iteration"] == 4 + summary["dropped_earlier_iteration"]
    assert summary["decontaminated"] == 2 + summary["decontaminated_earlier_iteration"] + (
        summary["dropped_benchmark_exact"] + summary["dropped_benchmark_similar"]
    )
    with caplog.at_level("WARNING", logger="aipo_core.pipeline"):
        generated = run_stage("generate", cfg, artifact_root=tmp_path, run_id="h", iteration=1)
    assert generated["chat_template"] == "chatml (imposed)" and generated["imposed_chat_template"] == 1
    assert "has no chat template" in caplog.text


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
            # SmolLM2's self-written instructions are mostly poems and stories: at a CPU-sized
            # budget (even 160 tokens) no candidate reaches EOS, so this machinery test keeps them.
            "generation": {
                "num_candidates": 2,
                "max_new_tokens": 24,
                "temperature": 0.9,
                "keep_unfinished": True,
            },
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
