"""Algorithm 1 end to end on real (tiny / SmolLM2) models: artifacts, resume, crash safety."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from aipo_cli.main import app
from aipo_core import artifacts
from aipo_core.access import ConfigRefused, ModelAccess
from aipo_core.config import RunConfig
from aipo_core.data import load_benchmark
from aipo_core.decontamination import Decontaminator
from aipo_core.devices import GPU, GiB, Hardware, cpu_has_native_bf16
from aipo_core.eval_sample import evaluation_sample
from aipo_core.models import load_model_and_tokenizer
from aipo_core.pipeline import STAGES, run, run_stage

# `precision: auto` on this host: bf16 inference where the CPU computes bf16 natively.
CPU_INFERENCE_DTYPE = "bfloat16" if cpu_has_native_bf16() else "float32"

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
        "pair_diagnostics": d / "pair_diagnostics.jsonl",
    }


def test_aipo_run_local_two_iterations_on_tiny_model(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps({**TINY, "training": {**TINY["training"], "keep_policies": "all"}}))
    result = CliRunner().invoke(
        app,
        ["run", str(config), "--local", "--home", str(tmp_path / "home"), "--run-id", "r1"],
        env={"COLUMNS": "200"},
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
    # θ_0 is evaluated once, by iteration 0, with the same judge on the same fixed sample.
    root = tmp_path / "home"
    base_file = artifacts.iteration_dir(root, "r1", 0) / "eval" / "base" / "alpaca_eval.jsonl"
    assert base_file.exists() and not (artifacts.iteration_dir(root, "r1", 1) / "eval" / "base").exists()
    sample_ids = evaluation_sample("alpaca_eval", 2, seed=0).prompt_ids
    evaluations = [
        artifacts.read_jsonl(path)
        for path in (
            base_file,
            iteration_files(root, "r1", 0)["eval"],
            iteration_files(root, "r1", 1)["eval"],
        )
    ]
    assert [[r["id"] for r in records] for records in evaluations] == [sample_ids] * 3
    assert {r["judge"] for records in evaluations for r in records} == {"llm_judge:tiny-random-llama"}
    first = json.loads((artifacts.iteration_dir(root, "r1", 0) / "stage_evaluate.json").read_text())
    assert first["base/alpaca_eval/n"] == 2 and first["alpaca_eval/n"] == 2
    assert first["judge"] == "base model θ_0 (tiny-random-llama), fixed"
    sample = json.loads((artifacts.iteration_dir(root, "r1", 0) / "eval" / "sample.json").read_text())
    assert sample["alpaca_eval"]["prompt_ids"] == sample_ids and sample["alpaca_eval"]["seed"] == 0
    # The summary table: θ_0 first, raw and LC side by side, LC n/a (6 judgements) with the reason.
    table = [line for line in result.output.splitlines() if line.startswith("│")]
    assert [row.split("│")[1].strip() for row in table] == ["θ_0 (base)", "θ_1", "θ_2"]
    assert all(row.split("│")[6].strip() == "n/a" for row in table)
    assert "judge: base model θ_0 (tiny-random-llama), fixed" in result.output
    assert "too few judgements" in result.output
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
    # fp32 throughout: with this seed the tiny model's fp32 candidates give pairs to train on.
    cfg = tiny_config(iterations=1, seed=3, training={**TINY["training"], "precision": "fp32"})
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

    # An evaluate stage that died after finishing θ_0's evaluation keeps it on the retry.
    scratch = artifacts.scratch_dir(tmp_path, "r", 0, "evaluate", "local")
    base_file = scratch / "eval" / "base" / "alpaca_eval.jsonl"
    finished = [
        {"id": i, "preference": 2.0, "output_chars": 5, "baseline_chars": 9, "output_tokens": 2}
        for i in ("1", "2", "3")
    ]
    artifacts.write_jsonl_atomic(base_file, finished)
    history = run(cfg, artifact_root=tmp_path, run_id="r")
    published_base = artifacts.iteration_dir(tmp_path, "r", 0) / "eval" / "base" / "alpaca_eval.jsonl"
    assert artifacts.read_jsonl(published_base) == finished
    assert history[0]["evaluate"]["base/alpaca_eval/n"] == 3 and history[0]["evaluate"]["alpaca_eval/n"] == 2
    # The run's training seed (3) does not move the evaluation sample (evaluation.seed = 0).
    policy_eval = artifacts.read_jsonl(iteration_files(tmp_path, "r", 0)["eval"])
    assert [r["id"] for r in policy_eval] == evaluation_sample("alpaca_eval", 2, seed=0).prompt_ids
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
    access = ModelAccess(data_roots=(tmp_path.resolve(),))
    for stage in STAGES[:3]:
        summary = run_stage(stage, cfg, artifact_root=tmp_path, run_id="uf", iteration=0, access=access)
    assert summary["imported"] == 6 and summary["pairs"] == 4
    assert summary["decontaminated"] == summary["decontaminated_benchmark_exact"] == 1
    assert summary["dropped_response_too_long"] == 1 and summary["dropped_prompt_too_long"] == 0
    pairs = artifacts.read_jsonl(iteration_files(tmp_path, "uf", 0)["pairs"])
    assert [p["chosen"][0]["content"] for p in pairs] == ["Blue."] * 4
    assert all(p["chosen_length"] > 0 and isinstance(p["ref_rejected_logps"], float) for p in pairs)


def test_evaluate_reports_the_run_objectives_rewards_and_weights(tmp_path):
    """The evaluate stage scores every pair under θ_1 and reports R-DPO's own weight (Park et al.
    Eq. 9, length term included) per pair and in summary, plus the Fig. 6 correlation."""
    dataset = tmp_path / "prefs.jsonl"
    rows = [
        {"prompt": f"Name a colour, take {i}.", "chosen": "Blue." * (1 + i), "rejected": "No."}
        for i in range(5)
    ]
    dataset.write_text("\n".join(json.dumps(r) for r in rows))
    cfg = tiny_config(iterations=1, initial_pairs=str(dataset), objective={"name": "rdpo", "alpha": 0.05})
    access = ModelAccess(data_roots=(tmp_path,))
    for stage in STAGES:
        summary = run_stage(stage, cfg, artifact_root=tmp_path, run_id="rd", iteration=0, access=access)
    files = iteration_files(tmp_path, "rd", 0)
    pairs = artifacts.read_jsonl(files["pairs"])
    per_pair = artifacts.read_jsonl(files["pair_diagnostics"])
    assert [d["id"] for d in per_pair] == [p["id"] for p in pairs]
    for pair, diag in zip(pairs, per_pair, strict=True):
        s_theta = diag["policy_chosen_logps"] - diag["policy_rejected_logps"]
        gap = pair["chosen_length"] - pair["rejected_length"]
        z = -0.1 * (s_theta - pair["s_ref"]) - 0.05 * gap
        assert diag["gradient_weight"] == pytest.approx(1 / (1 + math.exp(-z)), abs=1e-6)
    analysis = json.loads(files["analysis"].read_text())
    assert analysis["objective"]["objective"] == "rdpo"
    assert analysis["objective"]["gradient_weight"]["n"] == 5
    assert analysis["s_ref_length_gap"]["n"] == 5
    headline = summary["pair_analysis"]
    assert headline["gradient_weight_mean"] == pytest.approx(
        sum(d["gradient_weight"] for d in per_pair) / 5, abs=1e-9
    )
    assert headline["reward_accuracy_ci95_low"] <= headline["reward_accuracy"] <= 1.0
    assert headline["s_ref_length_gap_n"] == 5


def test_old_policies_are_pruned_after_evaluate_and_the_run_still_resumes(tmp_path):
    cfg = tiny_config(
        iterations=3, training={**TINY["training"], "keep_policies": "last", "keep_best_policy": False}
    )
    history = run(cfg, artifact_root=tmp_path, run_id="p")
    present = [k for k in range(3) if iteration_files(tmp_path, "p", k)["policy"].exists()]
    assert present == [2]
    # Resuming a finished run, and re-running its last evaluation, need no deleted folder.
    assert run(cfg, artifact_root=tmp_path, run_id="p") == history
    (artifacts.iteration_dir(tmp_path, "p", 2) / "stage_evaluate.json").unlink()
    again = run_stage("evaluate", cfg, artifact_root=tmp_path, run_id="p", iteration=2)
    assert again["alpaca_eval/n"] == history[2]["evaluate"]["alpaca_eval/n"]


def test_the_worker_side_check_refuses_before_anything_is_loaded_or_written(tmp_path):
    cfg = tiny_config(ranker={"kind": "reward_model", "model": "evil/reward-model"})
    access = ModelAccess(hub_models=("llm-blender/PairRM",))
    with pytest.raises(ConfigRefused, match="ranker.model: hub model 'evil/reward-model' is not on"):
        run_stage("self_instruct", cfg, artifact_root=tmp_path, run_id="x", iteration=0, access=access)
    assert not artifacts.run_dir(tmp_path, "x").exists()


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
    # Every ranked prompt's candidate scores, indexed like candidates.jsonl (unfinished: None).
    scored = {r["id"]: r for r in artifacts.read_jsonl(tmp_path / "runs/u/iter_0/candidate_scores.jsonl")}
    assert set(scored) == {r["id"] for r in candidates if sum(r["finished"]) >= 2}
    for record in candidates:
        if record["id"] in scored:
            scores = scored[record["id"]]["scores"]
            assert [s is not None for s in scores] == record["finished"]
    assert {p["id"] for p in pairs} == {i for i, r in scored.items() if r["outcome"] == "pair"}


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
    access = ModelAccess(data_roots=(tmp_path.resolve(),))
    summary = run_stage("self_instruct", cfg, artifact_root=tmp_path, run_id="h", iteration=1, access=access)
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
        generated = run_stage("generate", cfg, artifact_root=tmp_path, run_id="h", iteration=1, access=access)
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
    history = run(cfg, artifact_root=tmp_path, run_id="smol", access=ModelAccess(data_roots=(tmp_path,)))
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
    """On this CPU host, one process: inference stages in bf16 where the CPU computes it natively
    (else fp32), the rank (s_ref) and train stages in fp32; the summary says so per stage."""
    cfg = tiny_config(iterations=1)
    history = run(cfg, artifact_root=tmp_path, run_id="p")
    for stage in STAGES:
        dtype = "float32" if stage in ("rank", "train") else CPU_INFERENCE_DTYPE
        expected = {
            "device": "cpu",
            "dtype": dtype,
            "compute_dtype": dtype,
            "num_processes": 1,
            "strategy": "single",
            "gpu_count": 0,
            "gpu_name": None,
            "gpu_memory_gib": None,
        }
        assert history[0][stage]["placement"] == expected, stage


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
    equal the stored reference ones: log πθ − log π_ref ≈ 0 for every pair."""
    cfg = RunConfig.model_validate(
        {
            "name": "smol-s0",
            "model": "smollm2-135m-instruct",
            "iterations": 1,
            "prompt_pool": str(_small_pool(tmp_path)),
            "self_instruct": {"num_instructions": 4, "max_new_tokens": 24, "max_attempts_factor": 1},
            # Short answers are cut off; this test checks the reference scoring, not pair quality.
            "generation": {
                "num_candidates": 2,
                "max_new_tokens": 32,
                "temperature": 0.9,
                "keep_unfinished": True,
            },
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
    access = ModelAccess(data_roots=(tmp_path.resolve(),))
    for stage in STAGES[:4]:
        summary = run_stage(
            stage, cfg, artifact_root=tmp_path, run_id="s0", iteration=0, sink=events.append, access=access
        )
    assert summary["placement"]["compute_dtype"] == ("bfloat16" if precision == "bf16" else "float32")
    pairs = artifacts.read_jsonl(iteration_files(tmp_path, "s0", 0)["pairs"])
    assert pairs and any(abs(p["s_ref"]) > 0.1 for p in pairs)  # s_ref itself is not trivially 0
    metrics = [e["values"] for e in events if e.get("kind") == "metric"]
    first = next(values for values in metrics if "log_ratio_chosen" in values)
    assert summary["num_pairs"] <= training_batch == 4  # one batch: the trainer's step 0 sees these pairs
    # Same weights, same placement (dtype, autocast), same tokenization and batch shape: the
    # trainer's step-0 log-probs are bit-identical to the stored ones. (bench/sref_placement.py
    # measures bf16's batch-shape noise, ~0.3 nats per pair, and the offset of a mismatched
    # placement, ~0.2 nats, which this check would catch.)
    tolerance = 1e-6
    for key in ("log_ratio_chosen", "log_ratio_rejected"):
        assert abs(first[key]) < tolerance, (key, first)
    assert abs(first["s_theta_mean"] - first["s_ref_mean"]) < tolerance, first


@pytest.fixture(scope="module")
def trained_iteration(tmp_path_factory):
    """A tiny run's iteration 0 up to its trained policy; tests evaluate it into their own scratch."""
    root = tmp_path_factory.mktemp("trained")
    cfg = tiny_config(iterations=1)
    for stage in STAGES[:4]:
        run_stage(stage, cfg, artifact_root=root, run_id="t", iteration=0)
    return root


# Answers load in the inference placement, the pair analysis in the training one (fp32 on a CPU).
ON_CPU = {"answers": f"(cpu, {CPU_INFERENCE_DTYPE})", "pair analysis": "(cpu, float32)"}


@pytest.mark.parametrize(
    ("judge", "loads"),
    [
        # θ_0 judges: θ_1 answers first and goes, θ_0 answers and stays loaded to judge.
        ({"model": "base"}, [("θ_1", "answers"), ("θ_0", "answers"), ("θ_1", "pair analysis")]),
        # Self-judged: each model judges its answers while loaded; θ_1 is still held for the analysis
        # when it answered in the analysis's fp32, else it is loaded again in fp32 once released.
        (
            {"model": "policy"},
            [("θ_0", "answers"), ("θ_1", "answers")]
            + ([("θ_1", "pair analysis")] if CPU_INFERENCE_DTYPE != "float32" else []),
        ),
        # A judge of its own loads once both evaluated models are gone.
        (
            {"model": "tiny-random-llama"},
            [("θ_0", "answers"), ("θ_1", "answers"), ("judge", "judge"), ("θ_1", "pair analysis")],
        ),
    ],
)
def test_evaluate_holds_one_model_at_a_time(trained_iteration, tmp_path, judge, loads):
    """No load starts while an earlier model is alive (weakrefs, after gc), for every judge mode."""
    cfg = tiny_config(
        iterations=1, evaluation={**TINY["evaluation"], "judge": {"kind": "llm_judge", **judge}}
    )
    events: list[dict] = []
    summary = run_stage(
        "evaluate",
        cfg,
        artifact_root=trained_iteration,
        run_id="t",
        iteration=0,
        scratch_dir=tmp_path,
        sink=events.append,
    )
    fractions = [e["fraction"] for e in events if e["kind"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    expected = [
        {
            "model": "judge llm_judge:tiny-random-llama" if name == "judge" else f"{name} {ON_CPU[role]}",
            "role": role,
            "alive_at_load": [],
        }
        for name, role in loads
    ]
    assert summary["model_lifetimes"] == expected
    assert summary["base/alpaca_eval/n"] == summary["alpaca_eval/n"] == 2
    for path in (tmp_path / "eval" / "base" / "alpaca_eval.jsonl", tmp_path / "eval" / "alpaca_eval.jsonl"):
        assert all(1.0 <= r["preference"] <= 2.0 for r in artifacts.read_jsonl(path))


def test_evaluate_with_vllm_on_a_cpu_worker_is_refused_with_the_fix(tmp_path):
    cfg = tiny_config(iterations=1, device="cpu", generation={**TINY["generation"], "backend": "vllm"})
    with pytest.raises(RuntimeError, match="backend 'vllm' needs a CUDA GPU; use backend: hf on CPU workers"):
        run_stage("evaluate", cfg, artifact_root=tmp_path, run_id="v", iteration=0)
    assert not (artifacts.iteration_dir(tmp_path, "v", 0) / "eval").exists()


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_evaluate_answers_through_vllm_on_a_gpu_worker(trained_iteration, tmp_path):
    """With 4 GPUs (as a worker would register them) the evaluated model is not loaded here: the
    stage goes straight to the vLLM generator, which this CPU host cannot import."""
    four = Hardware(gpus=tuple(GPU(i, "NVIDIA H100 80GB HBM3", 80 * GiB) for i in range(4)), bf16=True)
    generation = {**TINY["generation"], "backend": "vllm", "tensor_parallel_size": 2, "data_parallel_size": 2}
    cfg = tiny_config(iterations=1, generation=generation)
    with pytest.raises(ImportError, match=r"generation.backend 'vllm' needs vLLM"):
        run_stage(
            "evaluate",
            cfg,
            artifact_root=trained_iteration,
            run_id="t",
            iteration=0,
            hardware=four,
            scratch_dir=tmp_path,
        )
