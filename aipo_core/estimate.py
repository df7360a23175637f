"""What a run will cost before it is launched: samples, tokens, judge passes and model size.

The launch preview (API `POST /runs/preview`, `aipo submit --dry-run`, the dashboard's launch
summary) shows these figures so that nobody queues hours of a shared GPU by accident. Every token
figure is an upper bound computed from the config's counts and lengths: generation stops at the
end-of-sequence token, self-instruct stops once it has enough instructions, and pairs whose
candidates tie or run too long are dropped, so real runs use less. Per iteration (Algorithm 1):

    self_instruct  ≤ num_instructions × max_attempts_factor calls × self_instruct.max_new_tokens
    generate       = num_instructions × num_candidates samples × generation.max_new_tokens
    rank           N(N−1) judge passes per prompt for pairwise judges, N for a reward model
    train          ≤ one pair per prompt, each chosen + rejected ≤ min(max_length,
                     max_prompt_length + generation.max_new_tokens) tokens, × epochs
    evaluate       judged benchmark prompts × evaluation.max_new_tokens, 2 judge passes each

Iteration 0 of a run with `initial_pairs` samples nothing and trains on the imported pairs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from aipo_core.architectures import BUILTIN_ARCHS
from aipo_core.config import RunConfig

# Decoder layouts the parameter formula knows; anything else needs safetensors weights to count.
LLAMA_LIKE = frozenset({"llama", "mistral", "qwen2"})
ARCH_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
MAX_ARCH_VALUE = 10_000_000  # no real config has a dimension this large; larger means a broken file
MAX_CONFIG_BYTES = 1_000_000
MAX_INDEX_BYTES = 50_000_000
PAIRWISE_RANKERS = frozenset({"llm_judge", "pairrm"})


@dataclass(frozen=True)
class ModelSize:
    """Parameter count of a model, or None with `source` saying why it is unavailable."""

    parameters: int | None
    source: str


@dataclass(frozen=True)
class GenerationTokens:
    """Upper bounds on newly generated tokens over the whole run, per stage."""

    self_instruct: int
    candidates: int
    evaluation: int

    @property
    def total(self) -> int:
        return self.self_instruct + self.candidates + self.evaluation


@dataclass(frozen=True)
class RunEstimate:
    """The cost of one run (see the module docstring for every formula)."""

    iterations: int
    sampled_iterations: int  # iterations that self-instruct and sample (not an imported iteration 0)
    new_instructions: int  # per sampled iteration
    candidates_per_prompt: int
    candidates: int  # sampled_iterations × new_instructions × candidates_per_prompt
    generation_tokens: GenerationTokens
    training_pairs: int | None  # pair passes over all iterations (epochs included); None = unknown
    training_tokens: int | None
    judge_passes: int  # ranking + evaluation forward passes of the judge model
    eval_prompts: int  # judged benchmark prompts per iteration
    model: ModelSize
    notes: tuple[str, ...]


def estimate_run(config: RunConfig, model: ModelSize, *, imported_pairs: int | None = None) -> RunEstimate:
    """The cost of `config`; `imported_pairs` is the row count of `initial_pairs` when known."""
    imports = config.initial_pairs is not None
    sampled = config.iterations - (1 if imports else 0)
    si, gen = config.self_instruct, config.generation
    prompts, n = si.num_instructions, gen.num_candidates
    eval_prompts = sum(judged_prompts(b, config.evaluation.limit) for b in config.evaluation.benchmarks)
    training_pairs, training_tokens = _training(config, sampled, imported_pairs)
    notes = []
    if imports:
        notes.append("iteration 0 trains on the imported initial_pairs and samples nothing")
        if imported_pairs is None:
            notes.append("initial_pairs could not be counted, so the training figures are unavailable")
    if config.evaluation.judge.kind == "alpaca_eval":
        notes.append("evaluation is judged by the AlpacaEval annotator (an external API), not on the GPU")
    return RunEstimate(
        iterations=config.iterations,
        sampled_iterations=sampled,
        new_instructions=prompts,
        candidates_per_prompt=n,
        candidates=sampled * prompts * n,
        generation_tokens=GenerationTokens(
            self_instruct=sampled * prompts * si.max_attempts_factor * si.max_new_tokens,
            candidates=sampled * prompts * n * gen.max_new_tokens,
            evaluation=config.iterations * eval_prompts * config.evaluation.max_new_tokens,
        ),
        training_pairs=training_pairs,
        training_tokens=training_tokens,
        judge_passes=sampled * prompts * ranking_passes(config.ranker.judge_kind, n)
        + config.iterations * eval_prompts * _eval_judge_passes(config.evaluation.judge.kind),
        eval_prompts=eval_prompts,
        model=model,
        notes=tuple(notes),
    )


def _training(config: RunConfig, sampled: int, imported_pairs: int | None) -> tuple[int | None, int | None]:
    """(pair passes, tokens) of training over the whole run; (None, None) if a count is unknown.

    A sampled pair is at most a full prompt plus a generated response; an imported one at most
    `max_length` (the trainer truncates there).
    """
    training = config.training
    sampled_length = min(training.max_length, training.max_prompt_length + config.generation.max_new_tokens)
    iterations = [(config.self_instruct.num_instructions, sampled_length)] * sampled
    if config.initial_pairs is not None:
        if imported_pairs is None:
            return None, None
        iterations.insert(0, (imported_pairs, training.max_length))
    passes = [(trained_pairs(pairs, config), length) for pairs, length in iterations]
    return sum(p for p, _ in passes), sum(p * 2 * length for p, length in passes)


def trained_pairs(pairs: int, config: RunConfig) -> int:
    """Pairs the trainer processes in one iteration: `max_steps` batches when set, else epochs."""
    training = config.training
    if training.max_steps is not None:
        return training.max_steps * training.batch_size * training.gradient_accumulation_steps
    return math.ceil(pairs * training.epochs)


def ranking_passes(kind: str, candidates: int) -> int:
    """Judge forward passes to rank one prompt's candidates: every ordered pair for pairwise
    judges (both orders cancel position bias), one per candidate for a reward model."""
    return candidates * (candidates - 1) if kind in PAIRWISE_RANKERS else candidates


def _eval_judge_passes(kind: str) -> int:
    """Passes per judged evaluation prompt: policy vs baseline in both orders, or both scored."""
    return 0 if kind == "alpaca_eval" else 2


def judged_prompts(benchmark: str, limit: int | None) -> int:
    """Evaluation prompts of `benchmark` that get judged: the first `limit` with a baseline answer."""
    return _judgeable_prefix_counts(benchmark)[min(limit, _size(benchmark)) if limit else _size(benchmark)]


@cache
def _judgeable_prefix_counts(benchmark: str) -> tuple[int, ...]:
    """counts[k] = judgeable items among the first k (bundled files; read once per process)."""
    from aipo_core.data.benchmarks import load_benchmark

    counts = [0]
    for item in load_benchmark(benchmark):
        counts.append(counts[-1] + (1 if item.baseline_output else 0))
    return tuple(counts)


def _size(benchmark: str) -> int:
    return len(_judgeable_prefix_counts(benchmark)) - 1


# ----------------------------------------------------------------------------- model size


def decoder_parameters(arch: Mapping[str, Any]) -> int:
    """Parameters of a Llama-layout decoder from its config (embeddings, per-layer attention with
    grouped KV heads, gated MLP, two RMSNorms per layer, final norm, LM head unless tied)."""
    hidden, inter = arch["hidden_size"], arch["intermediate_size"]
    heads = arch["num_attention_heads"]
    kv_heads = arch.get("num_key_value_heads") or heads
    head_dim = arch.get("head_dim") or hidden // heads
    q_out, kv_out = heads * head_dim, kv_heads * head_dim
    attention = hidden * q_out + 2 * hidden * kv_out + q_out * hidden
    if arch.get("model_type") == "qwen2":
        attention += q_out + 2 * kv_out  # Qwen2 has q/k/v biases
    elif arch.get("attention_bias"):
        attention += q_out + 2 * kv_out + hidden
    mlp = 3 * hidden * inter + ((2 * inter + hidden) if arch.get("mlp_bias") else 0)
    layer = attention + mlp + 2 * hidden
    embeddings = arch["vocab_size"] * hidden
    lm_head = 0 if arch.get("tie_word_embeddings", False) else embeddings
    return embeddings + arch["num_hidden_layers"] * layer + hidden + lm_head


def bundled_model_size(name: str) -> ModelSize:
    """Size of a built-in model from its architecture constant (nothing is built or loaded)."""
    arch = BUILTIN_ARCHS.get(name)
    if arch is None:
        raise ValueError(f"{name!r} is not a built-in model")
    return ModelSize(decoder_parameters(arch), f"built-in {name} architecture")


def folder_model_size(folder: Path) -> ModelSize:
    """Size of a `save_pretrained` folder: exact from safetensors headers (no weights are read),
    else from config.json for Llama-layout models, else unavailable with the reason."""
    counted = _safetensors_parameters(folder)
    if counted is not None:
        return ModelSize(counted, "safetensors headers")
    try:
        arch = json.loads(_read_head(folder / "config.json", MAX_CONFIG_BYTES))
    except (OSError, ValueError) as exc:
        return ModelSize(None, f"no readable config.json ({type(exc).__name__})")
    if not isinstance(arch, dict):
        return ModelSize(None, "config.json is not a JSON object")
    model_type = arch.get("model_type")
    if model_type not in LLAMA_LIKE:
        return ModelSize(
            None, f"model_type {model_type!r} has no parameter formula and no safetensors weights"
        )
    bad = [f for f in ARCH_FIELDS if not _plausible(arch.get(f))]
    if bad:
        return ModelSize(None, f"config.json has no usable {', '.join(bad)}")
    return ModelSize(decoder_parameters(arch), f"config.json ({model_type} layout)")


def _read_head(path: Path, limit: int) -> bytes:
    """At most `limit` bytes of a regular file (never a FIFO or device, which could block or never end)."""
    if not path.is_file():
        raise FileNotFoundError(path.name)
    with path.open("rb") as fh:
        return fh.read(limit)


def _plausible(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_ARCH_VALUE


def _safetensors_parameters(folder: Path) -> int | None:
    """Sum of tensor sizes in the folder's safetensors files (headers only); None if absent.

    Shard names come from the index file, so only plain file names inside `folder` are opened.
    """
    from safetensors import safe_open

    index = folder / "model.safetensors.index.json"
    if (folder / "model.safetensors").is_file():
        shards = ["model.safetensors"]
    elif index.is_file():
        try:
            weight_map = json.loads(_read_head(index, MAX_INDEX_BYTES)).get("weight_map", {})
            shards = sorted(set(weight_map.values()))
        except (OSError, ValueError, AttributeError, TypeError):
            return None
        if not shards or any(not isinstance(s, str) or Path(s).name != s for s in shards):
            return None
        if not all((folder / shard).is_file() for shard in shards):
            return None
    else:
        return None
    total = 0
    try:
        for shard in shards:
            with safe_open(str(folder / shard), framework="numpy") as handle:
                total += sum(math.prod(handle.get_slice(key).get_shape()) for key in handle.keys())
    except Exception:  # a truncated or foreign file: fall back to config.json
        return None
    return total
