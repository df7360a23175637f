"""Memory preflight: a 7B model is measured from its config alone and refused where it cannot fit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from aipo_core import artifacts
from aipo_core.access import ModelAccess
from aipo_core.config import RunConfig, TrainingConfig
from aipo_core.devices import GPU, GiB, Hardware, inference_placement, training_placement
from aipo_core.models import resolve_model_path
from aipo_core.pipeline import run_stage
from aipo_core.preflight import (
    InsufficientMemoryError,
    check_memory,
    checkpoint_shape,
    inference_need,
    inference_options,
    model_shape,
    training_need,
    training_options,
)

# Mistral-7B-v0.1's architecture (config only: no weights exist in these tests).
MISTRAL_7B = {
    "architectures": ["MistralForCausalLM"],
    "model_type": "mistral",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 32000,
    "max_position_embeddings": 32768,
    "tie_word_embeddings": False,
}
H100 = Hardware(gpus=(GPU(0, "NVIDIA H100 80GB HBM3", 80 * GiB),), bf16=True, host_memory_bytes=512 * GiB)


@pytest.fixture
def mistral_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "mistral-7b-config-only"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(MISTRAL_7B))
    return folder


def _config(model: str, **training) -> RunConfig:
    return RunConfig.model_validate({"name": "big", "model": model, "training": training})


def test_model_shape_counts_parameters_without_weights(mistral_folder: Path) -> None:
    shape = model_shape(mistral_folder)
    assert shape.parameters == 7_241_732_096  # Mistral-7B-v0.1's published count
    assert (shape.layers, shape.hidden, shape.kv_width, shape.vocab) == (32, 4096, 1024, 32000)


def test_tiny_model_shape_matches_the_loaded_model(tmp_path: Path) -> None:
    from aipo_core.models import load_model_and_tokenizer

    model, _ = load_model_and_tokenizer("tiny-random-llama", cache_dir=tmp_path)
    shape = model_shape(resolve_model_path("tiny-random-llama", tmp_path))
    assert shape.parameters == sum(p.numel() for p in model.parameters())


def test_training_need_by_hand(mistral_folder: Path) -> None:
    shape = model_shape(mistral_folder)
    training = TrainingConfig(batch_size=8, max_length=1024, max_prompt_length=512)
    placement = training_placement(_config(str(mistral_folder), batch_size=8), H100)
    need = training_need(shape, placement, training)
    p = shape.parameters
    assert need.parts["weights"] == 4 * p and need.parts["gradients"] == 4 * p
    assert need.parts["AdamW state"] == 8 * p
    # 8 pairs × 2 sequences × 1024 tokens × 4096 hidden × 34 bytes (bf16) × 32 layers
    assert need.parts["activations"] == 8 * 2 * 1024 * 4096 * 34 * 32
    sharded = training_placement(
        _config(str(mistral_folder), batch_size=8, num_processes=8, strategy="fsdp"),
        Hardware(gpus=tuple(GPU(i, "H100", 80 * GiB) for i in range(8)), bf16=True),
    )
    sharded_need = training_need(shape, sharded, training.model_copy(update={"num_processes": 8}))
    assert sharded_need.parts["AdamW state"] == 8 * p // 8
    assert sharded_need.parts["activations"] == need.parts["activations"] // 8


def test_full_finetune_of_7b_on_one_80gb_gpu_is_refused_with_numbers_and_options(
    mistral_folder: Path,
) -> None:
    config = _config(str(mistral_folder), batch_size=8)
    placement = training_placement(config, H100)
    shape = model_shape(mistral_folder)
    available = 79 * GiB
    with pytest.raises(InsufficientMemoryError) as refused:
        check_memory(
            "train",
            "mistral-7b",
            shape,
            training_need(shape, placement, config.training),
            placement,
            available,
            options=lambda: training_options(shape, placement, config.training, available),
        )
    message = str(refused.value)
    assert "model mistral-7b has 7.24 B parameters" in message
    assert "79.0 GiB free on NVIDIA H100 80GB HBM3" in message
    assert "weights 27.0 + gradients 27.0 + AdamW state 54.0" in message
    # Sharding 16 bytes/parameter over 2 GPUs (54 GiB each) plus checkpointed activations fits.
    assert "training.strategy: fsdp with training.num_processes: 2 (and gradient checkpointing" in message
    assert "training.strategy: deepspeed_zero3 with training.num_processes: 2" in message
    assert "num_processes: 4" not in message  # only the fewest processes that fit
    assert "training.gradient_checkpointing: true" not in message  # 108 GiB of state alone
    need = float(message.split("needs about ")[1].split(" GiB")[0])
    assert need > 108  # 16 bytes per parameter alone


def test_bf16_inference_of_7b_fits_one_gpu_and_fp32_on_a_small_one_does_not(mistral_folder: Path) -> None:
    shape = model_shape(mistral_folder)
    config = _config(str(mistral_folder))
    placement = inference_placement(config, H100)
    assert placement.dtype == torch.bfloat16
    need = inference_need(shape, placement, rows=8, tokens=1024)
    check_memory("generate", "m", shape, need, placement, 79 * GiB)  # 13.5 GiB of weights: fits
    small = Hardware(gpus=(GPU(0, "Tesla T4", 15 * GiB),), bf16=False)
    fp32 = inference_placement(config, small)
    assert fp32.dtype == torch.float32
    with pytest.raises(InsufficientMemoryError, match=r"needs about 3\d\.\d GiB per device .* Tesla T4"):
        check_memory("generate", "m", shape, inference_need(shape, fp32, rows=8, tokens=1024), fp32, 14 * GiB)


def test_train_stage_refuses_a_7b_model_on_this_host_before_loading_it(
    mistral_folder: Path, tmp_path: Path
) -> None:
    """A real stage on this CPU host: no weights exist, so reaching the loader would fail differently."""
    config = RunConfig.model_validate({"name": "big", "model": str(mistral_folder), "device": "cpu"})
    pair = {
        "prompt": [{"role": "user", "content": "q"}],
        "chosen": [{"role": "assistant", "content": "a"}],
        "rejected": [{"role": "assistant", "content": "b"}],
    }
    artifacts.write_jsonl_atomic(artifacts.iteration_dir(tmp_path, "r", 0) / "pairs.jsonl", [pair])
    with pytest.raises(InsufficientMemoryError) as refused:
        run_stage(
            "train",
            config,
            artifact_root=tmp_path / "",
            run_id="r",
            iteration=0,
            access=ModelAccess(data_roots=(tmp_path.resolve(),)),
        )
    message = str(refused.value)
    assert message.startswith(f"train: model {mistral_folder} has 7.24 B parameters and needs about ")
    assert "GiB of host memory available" in message
    assert "No bf16, gradient-checkpointing or FSDP/ZeRO-3" in message
    assert not (artifacts.iteration_dir(tmp_path, "r", 0) / "stage_train.json").exists()


# Llama-2-70B's architecture: more than this host's memory in any dtype (config only, no weights).
LLAMA_70B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 8192,
    "intermediate_size": 28672,
    "num_hidden_layers": 80,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
    "vocab_size": 32000,
    "tie_word_embeddings": False,
}
PAIRRM_CONFIG = {
    "ranker_type": "pairranker",
    "model_type": "deberta",
    "model_name": "microsoft/deberta-v3-large",
}


def _judge_folder(root: Path, kind: str) -> Path:
    """A judge of `kind` too large for this host, without weights (PairRM: a sparse 400 GB file)."""
    folder = root / f"big-{kind}"
    folder.mkdir()
    if kind == "pairrm":
        (folder / "config.json").write_text(json.dumps(PAIRRM_CONFIG))
        with (folder / "pytorch_model.bin").open("wb") as weights:
            weights.truncate(400 * 10**9)  # 100 B fp32 parameters by size, no disk used
    else:
        architecture = "LlamaForSequenceClassification" if kind == "reward_model" else "LlamaForCausalLM"
        (folder / "config.json").write_text(json.dumps({**LLAMA_70B, "architectures": [architecture]}))
    return folder


@pytest.mark.parametrize(
    ("kind", "billions"), [("llm_judge", "68.98"), ("reward_model", "68.71"), ("pairrm", "100.00")]
)
def test_evaluate_refuses_a_judge_that_cannot_fit_before_answering(
    tmp_path: Path, kind: str, billions: str
) -> None:
    judge = _judge_folder(tmp_path, kind)
    config = RunConfig.model_validate(
        {
            "name": "big-judge",
            "model": "tiny-random-llama",
            "device": "cpu",
            "evaluation": {"limit": 2, "judge": {"kind": kind, "model": str(judge)}},
        }
    )
    with pytest.raises(InsufficientMemoryError) as refused:
        run_stage(
            "evaluate",
            config,
            artifact_root=tmp_path,
            run_id="j",
            iteration=0,
            access=ModelAccess(data_roots=(tmp_path.resolve(),)),
        )
    message = str(refused.value)
    assert message.startswith(f"evaluate: model {judge} has {billions} B parameters and needs about ")
    assert "GiB of host memory available" in message
    assert message.endswith(
        "No bf16 or batch-size setting fits: choose a smaller evaluation.judge.model or a device with "
        "more memory."
    )
    assert not list(tmp_path.rglob("alpaca_eval.jsonl"))  # refused before any model answered


def test_rank_refuses_a_reward_model_that_cannot_fit_beside_the_policy(tmp_path: Path) -> None:
    judge = _judge_folder(tmp_path, "reward_model")
    config = RunConfig.model_validate(
        {
            "name": "big-rm",
            "model": "tiny-random-llama",
            "device": "cpu",
            "ranker": {"kind": "reward_model", "model": str(judge)},
        }
    )
    candidates = {
        "id": "a",
        "instruction": "q",
        "prompt": [{"role": "user", "content": "q"}],
        "candidates": ["x", "y"],
        "lengths": [1, 1],
        "finished": [True, True],
    }
    artifacts.write_jsonl_atomic(artifacts.iteration_dir(tmp_path, "r", 0) / "candidates.jsonl", [candidates])
    with pytest.raises(InsufficientMemoryError, match=rf"^rank: model {judge} has 68\.71 B parameters"):
        run_stage(
            "rank",
            config,
            artifact_root=tmp_path,
            run_id="r",
            iteration=0,
            access=ModelAccess(data_roots=(tmp_path.resolve(),)),
        )


def test_reward_model_on_a_gpu_budget_is_offered_bf16_and_a_smaller_batch(mistral_folder: Path) -> None:
    """A 7B reward model in fp32 (training.precision: fp32) on an 80 GB GPU with 40 GiB free."""
    config = json.loads((mistral_folder / "config.json").read_text())
    config["architectures"] = ["MistralForSequenceClassification"]
    (mistral_folder / "config.json").write_text(json.dumps({**config, "num_labels": 1}))
    shape = model_shape(mistral_folder, head="classifier")
    assert shape.parameters == 7_241_732_096 - 32000 * 4096 + 4096  # the LM head becomes a 1-wide score
    placement = inference_placement(_config(str(mistral_folder), precision="fp32"), H100)
    need = inference_need(shape, placement, rows=64, tokens=1024)
    available = 40 * GiB

    def options() -> list[str]:
        return inference_options(
            shape, placement, rows=64, tokens=1024, available=available, batch_field="ranker.batch_size"
        )

    with pytest.raises(InsufficientMemoryError) as refused:
        check_memory("rank", "rm", shape, need, placement, available, options=options)
    message = str(refused.value)
    assert "rank: model rm has 7.11 B parameters and needs about " in message
    assert "40.0 GiB free on NVIDIA H100 80GB HBM3" in message
    assert "Options that would fit: training.precision: bf16 (inference in bf16): ~" in message
    assert "; ranker.batch_size: " in message  # fp32 weights (26.5 GiB) fit with fewer rows


def test_pairrm_is_measured_by_its_checkpoint_weights(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from tests.aipo_core.checkpoints import build_tiny_pairrm

    folder = build_tiny_pairrm(tmp_path)
    weights = load_file(str(folder / "model.safetensors"))
    assert checkpoint_shape(folder).parameters == sum(t.numel() for t in weights.values())


def test_vllm_refuses_a_replica_whose_weights_exceed_its_gpu_share_before_starting(
    mistral_folder: Path, tmp_path: Path
) -> None:
    """A 7B model in fp32 (no bf16 on a T4) cannot fit 0.85 × 15 GiB: refused in the stage process,
    with the tensor-parallel size that would fit, not minutes later inside vLLM's child."""
    t4s = Hardware(gpus=tuple(GPU(i, "Tesla T4", 15 * GiB) for i in range(4)), bf16=False)
    config = RunConfig.model_validate(
        {"name": "big", "model": str(mistral_folder), "generation": {"backend": "vllm"}}
    )
    instructions = artifacts.iteration_dir(tmp_path, "g", 0) / "instructions.jsonl"
    artifacts.write_jsonl_atomic(instructions, [{"id": "a", "instruction": "hi"}])
    with pytest.raises(InsufficientMemoryError) as refused:
        run_stage(
            "generate",
            config,
            artifact_root=tmp_path,
            run_id="g",
            iteration=0,
            hardware=t4s,
            access=ModelAccess(data_roots=(tmp_path.resolve(),)),
        )
    assert str(refused.value) == (
        f"generate: model {mistral_folder} has 7.24 B parameters and needs about 28.5 GiB per device "
        "(weights 27.0 + CUDA runtime 1.5 GiB) on cuda:0 in float32, but only 12.8 GiB free on Tesla T4 "
        "(vLLM's 0.85 share). Options that would fit: generation.tensor_parallel_size: 4 "
        "(4 GPUs per replica)."
    )


def test_on_a_gpu_worker_the_early_judge_check_uses_the_whole_device_without_touching_cuda(
    tmp_path: Path,
) -> None:
    """Measuring free GPU memory would create a CUDA context in the stage process (and fail on this
    GPU-less host): the check before answering compares with the GPU's whole memory instead."""
    judge = _judge_folder(tmp_path, "llm_judge")
    config = RunConfig.model_validate(
        {
            "name": "big-judge-gpu",
            "model": "tiny-random-llama",
            "evaluation": {"limit": 2, "judge": {"kind": "llm_judge", "model": str(judge)}},
        }
    )
    with pytest.raises(InsufficientMemoryError) as refused:
        run_stage(
            "evaluate",
            config,
            artifact_root=tmp_path,
            run_id="g",
            iteration=0,
            hardware=H100,
            access=ModelAccess(data_roots=(tmp_path.resolve(),)),
        )
    message = str(refused.value)
    assert (
        " on cuda:0 in bfloat16, but only 80.0 GiB free on NVIDIA H100 80GB HBM3 (all of its memory)."
        in message
    )
    assert message.endswith("choose a smaller evaluation.judge.model or a device with more memory.")
