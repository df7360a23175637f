"""Memory preflight: estimate what a stage needs before loading its model, refuse what cannot fit.

A stage that loads a model too big for its device is otherwise killed by the OOM killer (host) or
dies in a CUDA OOM after minutes of loading; this check fails it first with the numbers: the
model's size, the need per device, what is available and the settings that would fit.

The model is measured without loading weights (its config instantiated on the meta device).
Estimates per device, in bytes:

- weights: parameters × bytes of the placement's dtype (÷ processes when sharded, FSDP / ZeRO-3);
- training adds fp32 gradients (4 B) and AdamW's two fp32 moments (8 B) per parameter, also ÷
  processes when sharded, and activations: per layer and token, 34·h bytes at 2-byte precision
  (Korthikanti et al., 2022, "Reducing Activation Recomputation in Large Transformer Models",
  Eq. 1 without the attention-score term, which SDPA/flash attention never materialises); with
  gradient checkpointing only each layer's input (2·h bytes) is kept, plus one layer recomputed;
- generation adds its KV cache: 2 (K, V) × layers × KV width × cached tokens; judges, rankers and
  reward models are inference too (a reward model measured as a sequence classifier, PairRM by its
  checkpoint's weights: `checkpoint_shape`), with bf16 or a smaller batch as options;
- vLLM (`check_vllm_memory`): each replica's 1/tensor_parallel_size of the weights must fit the
  `gpu_memory_utilization` share of its GPU (vLLM sizes its KV cache from what is left);
- a fixed margin for the CUDA context and allocator fragmentation.

These are estimates (±20%), meant to tell "cannot possibly fit" from "should fit".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch

from aipo_core.config import TrainingConfig
from aipo_core.devices import GiB, Placement

CUDA_OVERHEAD = int(1.5 * GiB)
ACTIVATION_VALUES_PER_TOKEN_PER_HIDDEN = 17  # 34·s·b·h bytes at 2 bytes per value
SHARDING_OPTIONS = (2, 4, 8)


class InsufficientMemoryError(RuntimeError):
    """A stage's model cannot fit its placement; the message names the numbers and the options."""


@dataclass(frozen=True)
class ModelShape:
    """Sizes that drive memory: parameter count, layers, hidden size, KV width, vocabulary."""

    parameters: int
    layers: int
    hidden: int
    kv_width: int
    vocab: int

    @property
    def billions(self) -> float:
        return self.parameters / 1e9


def model_shape(
    path: str | Path,
    *,
    trust_remote_code: bool = False,
    head: Literal["causal_lm", "classifier"] = "causal_lm",
) -> ModelShape:
    """Measure a `from_pretrained`-able model from its config alone (meta device, no weights):
    a causal LM, or with `head="classifier"` a sequence classifier (a reward model: the same
    backbone with a num_labels-wide score head instead of the LM head)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    auto = AutoModelForSequenceClassification if head == "classifier" else AutoModelForCausalLM
    with torch.device("meta"):
        model = auto.from_config(config, trust_remote_code=trust_remote_code)
    text = config.get_text_config()
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    return ModelShape(
        parameters=sum(p.numel() for p in model.parameters()),
        layers=text.num_hidden_layers,
        hidden=text.hidden_size,
        kv_width=kv_heads * head_dim,
        vocab=text.vocab_size,
    )


def checkpoint_shape(folder: Path) -> ModelShape:
    """A checkpoint measured by its weights alone (PairRM: llm-blender's own model class, no
    `from_config`): parameters from the safetensors headers, else from the size of an fp32
    pytorch_model.bin. Layers and widths are unknown (0), so its need is weights + runtime."""
    from aipo_core.estimate import folder_model_size

    counted = folder_model_size(folder).parameters
    if counted is None:
        weights = folder / "pytorch_model.bin"
        if not weights.is_file():
            raise FileNotFoundError(f"{folder} has neither model.safetensors nor pytorch_model.bin")
        counted = weights.stat().st_size // 4
    return ModelShape(parameters=counted, layers=0, hidden=0, kv_width=0, vocab=0)


@dataclass(frozen=True)
class MemoryNeed:
    """Bytes needed on each device, by part."""

    parts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def describe(self) -> str:
        return " + ".join(f"{name} {value / GiB:.1f}" for name, value in self.parts.items() if value) + " GiB"


def _bytes(dtype: torch.dtype) -> int:
    return torch.finfo(dtype).bits // 8


def _overhead(placement: Placement) -> int:
    return CUDA_OVERHEAD if placement.device == "cuda" else 0


def training_need(shape: ModelShape, placement: Placement, training: TrainingConfig) -> MemoryNeed:
    """Per device: fp32 weights, gradients and AdamW state (sharded or not) plus activations."""
    shards = placement.num_processes if placement.sharded else 1
    tokens = training.batch_size // placement.num_processes * 2 * training.max_length  # chosen+rejected
    value = _bytes(placement.compute_dtype)
    per_layer = tokens * shape.hidden * ACTIVATION_VALUES_PER_TOKEN_PER_HIDDEN * value
    if training.gradient_checkpointing:
        activations = tokens * shape.hidden * value * shape.layers + per_layer
    else:
        activations = per_layer * shape.layers
    return MemoryNeed(
        {
            "weights": shape.parameters * 4 // shards,
            "gradients": shape.parameters * 4 // shards,
            "AdamW state": shape.parameters * 8 // shards,
            "activations": activations,
            "CUDA runtime": _overhead(placement),
        }
    )


def inference_need(shape: ModelShape, placement: Placement, *, rows: int = 1, tokens: int = 0) -> MemoryNeed:
    """Weights in the placement's dtype plus a KV cache for `rows` sequences of `tokens` tokens."""
    value = _bytes(placement.compute_dtype)
    # Without gradients only one layer's activations are alive at a time.
    one_layer = rows * max(tokens, 1) * shape.hidden * ACTIVATION_VALUES_PER_TOKEN_PER_HIDDEN * value
    return MemoryNeed(
        {
            "weights": shape.parameters * _bytes(placement.dtype),
            "KV cache": 2 * shape.layers * shape.kv_width * rows * tokens * value,
            "activations": one_layer,
            "CUDA runtime": _overhead(placement),
        }
    )


def _where(placement: Placement, available: int) -> str:
    if placement.device == "cuda":
        return f"{available / GiB:.1f} GiB free on {placement.gpus[0].name}"
    return f"{available / GiB:.1f} GiB of host memory available"


def _fits(need: MemoryNeed, placement: Placement, available: int) -> bool:
    # CPU processes share one host memory; GPU processes each have their own device.
    processes = placement.num_processes if placement.device == "cpu" else 1
    return need.total * processes <= available


def training_options(
    shape: ModelShape, placement: Placement, training: TrainingConfig, available: int
) -> list[str]:
    """Settings under which the training need fits `available`: each single change, and for each
    sharding strategy the fewest processes (with gradient checkpointing) that fit."""
    candidates: list[tuple[str, Placement, TrainingConfig]] = []
    if placement.compute_dtype == torch.float32 and placement.device == "cuda":
        bf16 = replace(placement, autocast_dtype=torch.bfloat16)
        candidates.append(("training.precision: bf16", bf16, training))
    if not training.gradient_checkpointing:
        ckpt = training.model_copy(update={"gradient_checkpointing": True})
        candidates.append(("training.gradient_checkpointing: true", placement, ckpt))
    for n in SHARDING_OPTIONS:
        if n <= placement.num_processes and placement.sharded:
            continue
        batch = max(training.batch_size // n, 1) * n
        sharded_training = training.model_copy(
            update={"num_processes": n, "batch_size": batch, "gradient_checkpointing": True}
        )
        for strategy in ("fsdp", "deepspeed_zero3"):
            sharded = replace(placement, num_processes=n, strategy=strategy)
            label = (
                f"training.strategy: {strategy} with training.num_processes: {n} "
                f"(and gradient checkpointing; {n} GPUs)"
            )
            candidates.append((label, sharded, sharded_training))
    fitting: list[str] = []
    sharded_fit: set[str] = set()  # strategies already offered at a smaller process count
    for label, option_placement, option_training in candidates:
        if option_placement.strategy in sharded_fit:
            continue
        need = training_need(shape, option_placement, option_training)
        if _fits(need, option_placement, available):
            fitting.append(f"{label}: ~{need.total / GiB:.1f} GiB per device")
            if option_placement.sharded:
                sharded_fit.add(option_placement.strategy)
    return fitting


def inference_options(
    shape: ModelShape,
    placement: Placement,
    *,
    rows: int,
    tokens: int,
    available: int,
    batch_field: str,
) -> list[str]:
    """Settings under which an inference need fits `available`: bf16 weights (on a GPU computing
    in fp32), then the largest `batch_field` below `rows` that fits."""
    fitting: list[str] = []
    if placement.device == "cuda" and placement.dtype == torch.float32:
        bf16 = replace(placement, dtype=torch.bfloat16)
        need = inference_need(shape, bf16, rows=rows, tokens=tokens)
        if _fits(need, bf16, available):
            fitting.append(f"training.precision: bf16 (inference in bf16): ~{need.total / GiB:.1f} GiB")
    smaller = next(
        (
            n
            for n in range(rows - 1, 0, -1)
            if _fits(inference_need(shape, placement, rows=n, tokens=tokens), placement, available)
        ),
        None,
    )
    if smaller is not None:
        need = inference_need(shape, placement, rows=smaller, tokens=tokens)
        fitting.append(f"{batch_field}: {smaller}: ~{need.total / GiB:.1f} GiB")
    return fitting


def vllm_need(shape: ModelShape, placement: Placement, *, tensor_parallel: int) -> MemoryNeed:
    """Per GPU of a vLLM replica: its 1/tensor_parallel of the weights plus the CUDA runtime. The
    KV cache is not counted: vLLM gives it whatever its memory share leaves."""
    return MemoryNeed(
        {
            "weights": shape.parameters * _bytes(placement.compute_dtype) // tensor_parallel,
            "CUDA runtime": _overhead(placement),
        }
    )


def check_vllm_memory(
    what: str,
    model: str,
    shape: ModelShape,
    placement: Placement,
    *,
    tensor_parallel: int,
    utilization: float,
) -> None:
    """Refuse when a replica's weight shard does not fit the `utilization` share of its GPU (what
    vLLM may take), instead of failing minutes later inside vLLM's child process."""
    gpu = placement.gpus[0]
    budget = int(utilization * gpu.memory_bytes)

    def options() -> list[str]:
        found = []
        for share in (0.9, 0.95):
            if share > utilization and vllm_need(shape, placement, tensor_parallel=tensor_parallel).total <= (
                share * gpu.memory_bytes
            ):
                found.append(f"generation.gpu_memory_utilization: {share}")
                break
        for size in SHARDING_OPTIONS:
            need = vllm_need(shape, placement, tensor_parallel=size)
            if size > tensor_parallel and need.total <= budget:
                found.append(f"generation.tensor_parallel_size: {size} ({size} GPUs per replica)")
                break
        return found

    check_memory(
        what,
        model,
        shape,
        vllm_need(shape, placement, tensor_parallel=tensor_parallel),
        replace(placement, gpus=(replace(gpu, name=f"{gpu.name} (vLLM's {utilization:g} share)"),)),
        budget,
        options=options,
        no_fit="No gpu_memory_utilization or tensor_parallel_size (up to 8) fits: use GPUs with more "
        "memory or a smaller model.",
    )


TRAINING_NO_FIT = (
    "No bf16, gradient-checkpointing or FSDP/ZeRO-3 (up to 8 GPUs) setting fits: "
    "use GPUs with more memory or a smaller model."
)


def check_memory(
    what: str,
    model: str,
    shape: ModelShape,
    need: MemoryNeed,
    placement: Placement,
    available: int,
    options: Callable[[], list[str]] = list,
    *,
    no_fit: str = TRAINING_NO_FIT,
) -> None:
    """Raise `InsufficientMemoryError` when `need` does not fit; the message has every number.
    `options()` lists the settings that would fit; `no_fit` is the advice when none does."""
    if _fits(need, placement, available):
        return
    processes = placement.num_processes if placement.device == "cpu" else 1
    per = f" × {processes} processes" if processes > 1 else " per device"
    found = options()
    advice = "Options that would fit: " + "; ".join(found) + "." if found else no_fit
    raise InsufficientMemoryError(
        f"{what}: model {model} has {shape.billions:.2f} B parameters and needs about "
        f"{need.total / GiB:.1f} GiB{per} ({need.describe()}) on {placement.describe()['device']} in "
        f"{placement.describe()['compute_dtype']}, but only {_where(placement, available)}. {advice}"
    )
