"""Placement policy: device and dtype per role, from the config and the worker's hardware."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from pydantic import ValidationError

from aipo_core.config import RunConfig
from aipo_core.devices import (
    GPU,
    GiB,
    Hardware,
    Placement,
    cpu_has_native_bf16,
    inference_placement,
    judging_autocast,
    resolve_placement,
    training_placement,
)

CPU_HOST = Hardware(host_memory_bytes=24 * GiB)
EIGHT_H100 = Hardware(gpus=tuple(GPU(i, "NVIDIA H100 80GB HBM3", 80 * GiB) for i in range(8)), bf16=True)
V100 = Hardware(gpus=(GPU(0, "Tesla V100-SXM2-32GB", 32 * GiB),), bf16=False)


def _config(**values) -> RunConfig:
    return RunConfig.model_validate({"name": "p", "model": "tiny-random-llama", **values})


def test_auto_on_a_cpu_host_is_fp32_on_cpu() -> None:
    for placement in (inference_placement(_config(), CPU_HOST), training_placement(_config(), CPU_HOST)):
        assert (placement.device, placement.dtype, placement.autocast_dtype) == ("cpu", torch.float32, None)
        assert placement.load_kwargs() == {"dtype": torch.float32}


def test_auto_on_a_cpu_with_native_bf16_infers_in_bf16_and_trains_in_fp32() -> None:
    host = Hardware(host_memory_bytes=24 * GiB, cpu_bf16=True)
    inference = inference_placement(_config(), host)
    assert (inference.device, inference.dtype, inference.autocast_dtype) == ("cpu", torch.bfloat16, None)
    training = training_placement(_config(), host)
    assert (training.dtype, training.autocast_dtype) == (torch.float32, None)
    # fp32 asked for is fp32 everywhere; bf16 asked for is autocast in training too.
    assert inference_placement(_config(training={"precision": "fp32"}), host).dtype == torch.float32
    assert training_placement(_config(training={"precision": "bf16"}), host).autocast_dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        (Hardware(cpu_bf16=True), torch.bfloat16),  # the policy judging itself: bf16 like any judge
        (CPU_HOST, torch.float32),  # no native bf16: the fp32 training placement, no autocast
        (EIGHT_H100, torch.bfloat16),  # the GPU's training placement autocasts to bf16 anyway
    ],
)
def test_a_judge_held_in_the_training_placement_computes_in_the_inference_dtype(host, expected) -> None:
    scoring, inference = training_placement(_config(), host), inference_placement(_config(), host)
    context = judging_autocast(scoring, inference)
    dtype = context.fast_dtype if isinstance(context, torch.autocast) else torch.float32
    assert (dtype, getattr(context, "device", scoring.device)) == (expected, scoring.device)
    if scoring.device == "cpu":
        weight = torch.ones(4, 4)
        with context:
            assert (weight @ weight).dtype == expected


@pytest.mark.parametrize(
    ("flags", "native"),
    [
        ("fpu avx2 avx512f avx512_bf16 avx512_vnni", True),  # Zen 4, Cooper Lake
        ("fpu avx2 avx512f amx_bf16 amx_tile", True),  # Sapphire Rapids
        ("fpu avx2 avx512f avx512bw", False),  # Skylake-SP: bf16 only emulated
        ("fp asimd bf16", False),  # an Arm core's flags line says "Features", not "flags"
    ],
)
def test_native_bf16_is_read_from_the_cpu_flags(flags: str, native: bool) -> None:
    key = "Features" if flags.startswith("fp ") else "flags"
    cpuinfo = f"processor\t: 0\nmodel name\t: some cpu\n{key}\t\t: {flags}\n"
    assert cpu_has_native_bf16(cpuinfo) is native
    assert cpu_has_native_bf16("") is False


def test_auto_on_a_bf16_gpu_loads_bf16_for_inference_and_trains_fp32_with_bf16_autocast() -> None:
    inference = inference_placement(_config(), EIGHT_H100)
    assert inference.load_kwargs() == {"dtype": torch.bfloat16, "device_map": {"": 0}}
    training = training_placement(_config(), EIGHT_H100)
    assert (training.dtype, training.autocast_dtype) == (torch.float32, torch.bfloat16)
    assert training.load_kwargs() == {"dtype": torch.float32, "device_map": {"": 0}}
    assert training.describe() == {
        "device": "cuda:0",
        "dtype": "float32",
        "compute_dtype": "bfloat16",
        "num_processes": 1,
        "strategy": "single",
        "gpu_count": 1,
        "gpu_name": "NVIDIA H100 80GB HBM3",
        "gpu_memory_gib": 80.0,
    }


def test_gpu_without_bf16_stays_fp32_and_refuses_explicit_bf16() -> None:
    assert inference_placement(_config(), V100).dtype == torch.float32
    with pytest.raises(RuntimeError, match="bf16 is not supported by Tesla V100"):
        training_placement(_config(training={"precision": "bf16"}), V100)


def test_device_cpu_wins_over_gpus_and_cuda_without_gpus_is_an_error() -> None:
    assert training_placement(_config(device="cpu"), EIGHT_H100).device == "cpu"
    with pytest.raises(RuntimeError, match="device: 'cuda' was asked for but this worker has no CUDA GPU"):
        inference_placement(_config(device="cuda"), CPU_HOST)


def test_multi_process_placements_and_each_rank_s_own_gpu() -> None:
    ddp = training_placement(_config(training={"num_processes": 4, "batch_size": 8}), EIGHT_H100)
    assert (ddp.num_processes, ddp.strategy, len(ddp.gpus)) == (4, "ddp", 4)
    assert ddp.for_rank(2).load_kwargs()["device_map"] == {"": 2}
    fsdp = training_placement(_config(training={"num_processes": 8, "strategy": "fsdp"}), EIGHT_H100)
    assert fsdp.sharded and "device_map" not in fsdp.load_kwargs()
    with pytest.raises(RuntimeError, match="training.num_processes needs 8 GPUs but this worker has 1"):
        training_placement(_config(training={"num_processes": 8}), V100)
    assert Placement.from_json(json.loads(json.dumps(fsdp.to_json()))) == fsdp


def test_vllm_placement_spans_tensor_times_data_parallel_gpus() -> None:
    config = _config(generation={"backend": "vllm", "tensor_parallel_size": 2, "data_parallel_size": 2})
    assert config.generation.gpus == 4
    assert len(inference_placement(config, EIGHT_H100, gpus=config.generation.gpus).gpus) == 4


def test_global_batch_must_split_evenly_over_processes() -> None:
    with pytest.raises(ValidationError, match=r"batch_size \(6\) is the global batch .* num_processes \(4\)"):
        _config(training={"batch_size": 6, "num_processes": 4})
    assert _config(training={"num_processes": 1}).training.resolved_strategy == "single"
    assert _config(training={"num_processes": 2, "batch_size": 8}).training.resolved_strategy == "ddp"


def test_probe_of_this_machine_and_the_module_entry_point() -> None:
    hardware = Hardware.probe()
    assert hardware.host_memory_bytes > 1 * GiB
    assert resolve_placement(_config(), "training", hardware).device == ("cuda" if hardware.gpus else "cpu")
    printed = subprocess.run(
        [sys.executable, "-m", "aipo_core.devices"], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    parsed = Hardware.from_description(json.loads(printed))
    assert [g.name for g in parsed.gpus] == [g.name for g in hardware.gpus]
    assert parsed.cpu_bf16 == hardware.cpu_bf16 == cpu_has_native_bf16()
