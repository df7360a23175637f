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
    inference_need,
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
