"""Where a stage's models live: one `Placement` per stage, resolved from the run config and the
worker's hardware, honoured by every model load and every forward.

Two roles share the run's `device` and `training.precision`:

- inference (self-instruct, generation, judging, evaluation): weights are loaded directly on the
  device in the compute dtype (bf16 on a CUDA GPU that supports it and on a CPU with native bf16
  instructions, else fp32), so a 7B model takes 14 GB of GPU memory and no host copy at all;
- training, and the reference log-probs that must equal the trainer's step-0 log-probs: fp32
  weights (the optimizer's master copy; a 5e-7 AdamW step is below bf16's resolution) with bf16
  autocast where the compute dtype is bf16, across `training.num_processes` processes.

The rank stage scores its pairs with the training placement, so the stored s_ref is computed by
exactly the forward the trainer runs at step 0, on whatever device runs it. Every stage records
`Placement.describe()` in its summary (device, dtypes, GPU name and memory), which the API serves.

`python -m aipo_core.devices` prints this machine's `Hardware` as JSON (the worker registers it
from a short-lived process, so the worker itself never opens a CUDA context).
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch

from aipo_core.config import RunConfig

GiB = 1024**3
Role = Literal["inference", "training"]
DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


@dataclass(frozen=True)
class GPU:
    """One visible CUDA device."""

    index: int
    name: str
    memory_bytes: int

    def describe(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "memory_gib": round(self.memory_bytes / GiB, 1)}


CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU multiplies bf16 matrices in hardware (AVX512-BF16 or AMX-BF16, per the
    `flags` of /proc/cpuinfo). Without them torch emulates bf16 and it is slower than fp32; with
    them a SmolLM2 prefill runs 1.7-2x faster than in fp32 (bench/cpu_decoding.py)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as handle:
                cpuinfo = handle.read()
        except OSError:  # not Linux
            return False
    lines = [line for line in cpuinfo.splitlines() if line.startswith("flags")]
    flags = {flag for line in lines for flag in line.split(":", 1)[-1].split()}
    return any(flag in flags for flag in CPU_BF16_FLAGS)


@dataclass(frozen=True)
class Hardware:
    """What a worker has: its GPUs (empty on a CPU host), their bf16 support, total host memory,
    and whether its CPU computes bf16 natively (`cpu_has_native_bf16`)."""

    gpus: tuple[GPU, ...] = ()
    bf16: bool = False
    host_memory_bytes: int = 0
    cpu_bf16: bool = False

    @classmethod
    def probe(cls) -> Hardware:
        """This process's view (creates a CUDA context when there is a GPU)."""
        import psutil

        gpus: tuple[GPU, ...] = ()
        bf16 = False
        if torch.cuda.is_available():
            properties = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
            gpus = tuple(GPU(i, p.name, p.total_memory) for i, p in enumerate(properties))
            bf16 = torch.cuda.is_bf16_supported()
        return cls(
            gpus=gpus,
            bf16=bf16,
            host_memory_bytes=psutil.virtual_memory().total,
            cpu_bf16=cpu_has_native_bf16(),
        )

    def describe(self) -> dict[str, Any]:
        return {
            "gpus": [gpu.describe() for gpu in self.gpus],
            "bf16": self.bf16,
            "host_memory_gib": round(self.host_memory_bytes / GiB, 1),
            "cpu_bf16": self.cpu_bf16,
        }

    @classmethod
    def from_description(cls, data: dict[str, Any]) -> Hardware:
        """The inverse of `describe` (memory rounded to 0.1 GiB)."""
        gpus = tuple(GPU(g["index"], g["name"], int(g["memory_gib"] * GiB)) for g in data.get("gpus", []))
        memory = int(data.get("host_memory_gib", 0) * GiB)
        return cls(gpus, bool(data.get("bf16")), memory, bool(data.get("cpu_bf16")))


@dataclass(frozen=True)
class Placement:
    """Device, weight dtype, autocast dtype and process layout of one stage's model.

    dtype: what the weights are loaded as. autocast_dtype: the dtype matmuls run in under
    `autocast()` (None: no autocast, compute in `dtype`). gpus: the devices it uses (empty on CPU).
    """

    device: Literal["cpu", "cuda"]
    dtype: torch.dtype
    autocast_dtype: torch.dtype | None = None
    num_processes: int = 1
    strategy: str = "single"
    gpus: tuple[GPU, ...] = field(default=())

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.autocast_dtype or self.dtype

    @property
    def sharded(self) -> bool:
        """Weights are split across processes (FSDP / ZeRO-3), not replicated."""
        return self.strategy in ("fsdp", "deepspeed_zero3")

    def torch_device(self) -> torch.device:
        """This process's device (its first GPU)."""
        return torch.device("cuda", self.gpus[0].index) if self.gpus else torch.device("cpu")

    def for_rank(self, local_rank: int) -> Placement:
        """The view of process `local_rank` of a multi-process run: its own GPU first."""
        if not self.gpus:
            return self
        mine = self.gpus[local_rank]
        return replace(self, gpus=(mine, *(gpu for gpu in self.gpus if gpu != mine)))

    def load_kwargs(self) -> dict[str, Any]:
        """`from_pretrained` arguments that load straight onto the device in the target dtype.

        Sharded strategies place the weights themselves (FSDP / DeepSpeed), so no device map.
        """
        kwargs: dict[str, Any] = {"dtype": self.dtype}
        if self.gpus and not self.sharded:
            kwargs["device_map"] = {"": self.gpus[0].index}
        return kwargs

    def to_json(self) -> dict[str, Any]:
        """Everything needed to rebuild this placement in another process (`from_json`)."""
        return {
            "device": self.device,
            "dtype": DTYPE_NAMES[self.dtype],
            "autocast_dtype": DTYPE_NAMES[self.autocast_dtype] if self.autocast_dtype else None,
            "num_processes": self.num_processes,
            "strategy": self.strategy,
            "gpus": [[gpu.index, gpu.name, gpu.memory_bytes] for gpu in self.gpus],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Placement:
        dtypes = {name: dtype for dtype, name in DTYPE_NAMES.items()}
        autocast = data.get("autocast_dtype")
        return cls(
            data["device"],
            dtypes[data["dtype"]],
            dtypes[autocast] if autocast else None,
            num_processes=int(data["num_processes"]),
            strategy=data["strategy"],
            gpus=tuple(GPU(int(i), str(n), int(m)) for i, n, m in data.get("gpus", [])),
        )

    def autocast(self):
        """The mixed-precision context the trainer runs its forward in (a no-op without autocast)."""
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device, dtype=self.autocast_dtype)

    def describe(self) -> dict[str, Any]:
        """The stage metadata the API serves: device, dtypes, processes, GPU name and memory."""
        first = self.gpus[0] if self.gpus else None
        return {
            "device": f"cuda:{first.index}" if first else "cpu",
            "dtype": DTYPE_NAMES.get(self.dtype, str(self.dtype)),
            "compute_dtype": DTYPE_NAMES.get(self.compute_dtype, str(self.compute_dtype)),
            "num_processes": self.num_processes,
            "strategy": self.strategy,
            "gpu_count": len(self.gpus),
            "gpu_name": first.name if first else None,
            "gpu_memory_gib": round(first.memory_bytes / GiB, 1) if first else None,
        }


def judging_autocast(scoring: Placement, inference: Placement) -> AbstractContextManager[Any]:
    """Autocast for judging with a model held in the `scoring` (training) placement, e.g. the
    policy ranking its own candidates: judging is inference, so it computes in the inference
    compute dtype — bf16 autocast over the fp32 weights where that is bf16 (a GPU under `auto`,
    a CPU with native bf16), else whatever `scoring` does."""
    if inference.compute_dtype == torch.bfloat16:
        return torch.autocast(scoring.device, dtype=torch.bfloat16)
    return scoring.autocast()


def resolve_device(requested: str, hardware: Hardware) -> Literal["cpu", "cuda"]:
    """`device: auto|cpu|cuda` → cpu or cuda; asking for cuda on a GPU-less worker is an error."""
    if requested == "cpu":
        return "cpu"
    if hardware.gpus:
        return "cuda"
    if requested == "cuda":
        raise RuntimeError("device: 'cuda' was asked for but this worker has no CUDA GPU")
    return "cpu"


def compute_dtype(precision: str, device: str, hardware: Hardware, *, training: bool = False) -> torch.dtype:
    """training.precision → the compute dtype: auto = bf16 on a CUDA GPU that supports it, else fp32;
    for inference also bf16 on a CPU with native bf16 (`Hardware.cpu_bf16`). Training on a CPU stays
    fp32 under auto: it is a small share of a CPU run, and bf16 autocast would put ~0.3 nats of noise
    between the stored s_ref and the trainer's step-0 log-ratio (README, "Placement")."""
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        if device == "cuda" and not hardware.bf16:
            raise RuntimeError(f"training.precision: bf16 is not supported by {hardware.gpus[0].name}")
        return torch.bfloat16
    native = hardware.bf16 if device == "cuda" else hardware.cpu_bf16 and not training
    return torch.bfloat16 if native else torch.float32


def _gpus_for(device: str, count: int, hardware: Hardware, what: str) -> tuple[GPU, ...]:
    if device != "cuda":
        return ()
    if count > len(hardware.gpus):
        raise RuntimeError(f"{what} needs {count} GPUs but this worker has {len(hardware.gpus)}")
    return hardware.gpus[:count]


def inference_placement(config: RunConfig, hardware: Hardware, *, gpus: int = 1) -> Placement:
    """Weights in the compute dtype on the device (`gpus` > 1: vLLM's tensor × data parallel)."""
    device = resolve_device(config.device, hardware)
    dtype = compute_dtype(config.training.precision, device, hardware)
    used = _gpus_for(device, gpus, hardware, "generation (tensor_parallel_size × data_parallel_size)")
    return Placement(device, dtype, None, num_processes=max(1, len(used)), strategy="single", gpus=used)


def training_placement(config: RunConfig, hardware: Hardware) -> Placement:
    """fp32 weights, autocast to the compute dtype, `training.num_processes` processes."""
    training = config.training
    device = resolve_device(config.device, hardware)
    dtype = compute_dtype(training.precision, device, hardware, training=True)
    used = _gpus_for(device, training.num_processes, hardware, "training.num_processes")
    autocast = None if dtype == torch.float32 else dtype
    return Placement(
        device,
        torch.float32,
        autocast,
        num_processes=training.num_processes,
        strategy=training.resolved_strategy,
        gpus=used,
    )


def resolve_placement(config: RunConfig, role: Role, hardware: Hardware | None = None) -> Placement:
    """The placement of a stage's role on `hardware` (probed when not given)."""
    hardware = hardware or Hardware.probe()
    if role == "training":
        return training_placement(config, hardware)
    return inference_placement(config, hardware)


def available_memory(placement: Placement) -> int:
    """Bytes free now where `placement` puts a process: the least free of its GPUs, or host RAM
    available (shared by all its processes on CPU)."""
    if placement.device == "cuda":
        return min(torch.cuda.mem_get_info(gpu.index)[0] for gpu in placement.gpus)
    import psutil

    return psutil.virtual_memory().available


def main() -> None:
    print(json.dumps(Hardware.probe().describe()))


if __name__ == "__main__":
    main()
