"""Sample N candidate responses per instruction from the current policy (Algorithm 1, step 2).

Two backends behind one `Generator` protocol:

* `hf` (`HFGenerator`): transformers `generate` on the in-memory model. Prompts are batched with
  left padding; the N candidates of a prompt share one prefill: the prompt is run through the model
  once, its KV cache is repeated N times, and decoding continues for B·N rows (plain
  `num_return_sequences=N` would prefill every prompt N times).
* `vllm` (`VLLMGenerator`, optional `gpu` extra): vLLM in spawned child processes, one per data-parallel
  shard of the prompts, each over `tensor_parallel_size` GPUs of its own. The stage process loads no
  weights; when the children exit every byte of GPU memory vLLM took is released, before the rank
  and train stages start (bench/gpu_smoke.py checks it).

`generate_candidates` turns instructions.jsonl records into candidates.jsonl records.
"""

from __future__ import annotations

import importlib.util
import inspect
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from aipo_core.config import GenerationConfig
from aipo_core.models import inference

Messages = list[dict[str, str]]
Sink = Callable[[dict], None]
BatchCallback = Callable[[int, "GenerationResult"], None]

# End-of-turn markers of common chat formats. A model that does not emit its EOS token as a special
# token sometimes writes one of these as text, or starts a new turn; everything from there is cut.
END_MARKERS = (
    "<|im_end|>",
    "<|im_start|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|start_header_id|>",
    "<|end|>",
    "<end_of_turn>",
    "</s>",
)


@dataclass
class GenerationResult:
    """Candidates for a list of prompts; every nested list is [n_prompts][n_candidates]."""

    texts: list[list[str]]
    lengths: list[list[int]]  # generated tokens per candidate, EOS excluded
    finished: list[list[bool]]  # True when the candidate ended at EOS (not at max_new_tokens)
    elapsed_s: float = 0.0
    generated_tokens: int = 0  # tokens actually decoded (greedy decodes one copy per prompt)

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def extend(self, other: GenerationResult) -> None:
        """Append another batch's results (timings add up: batches run one after the other)."""
        self.texts.extend(other.texts)
        self.lengths.extend(other.lengths)
        self.finished.extend(other.finished)
        self.elapsed_s += other.elapsed_s
        self.generated_tokens += other.generated_tokens


class Generator(Protocol):
    """Anything that samples `num_candidates` responses per chat prompt."""

    def generate(
        self,
        prompts: Sequence[Messages],
        *,
        num_candidates: int,
        temperature: float,
        top_p: float,
        max_new_tokens: int,
        seed: int,
        on_batch: BatchCallback | None = None,
    ) -> GenerationResult:
        """`on_batch(prompts_done, batch_result)` is called after each internal batch (progress)."""
        ...


def clean_response(text: str, markers: Sequence[str] = END_MARKERS) -> str:
    """Cut a decoded response at the first end marker written as text, drop a trailing partial
    marker left by the token budget (e.g. "...<|im_"), and strip surrounding whitespace."""
    cut = min((i for i in (text.find(m) for m in markers if m) if i >= 0), default=len(text))
    text = text[:cut]
    text = _strip_partial_marker(text, markers)
    return text.strip()


def _strip_partial_marker(text: str, markers: Sequence[str]) -> str:
    longest = max((len(m) for m in markers), default=0)
    # Prefixes of two characters or more ("</", "<|") only: a lone "<" may be legitimate text.
    for size in range(min(longest - 1, len(text)), 1, -1):
        tail = text[-size:]
        if any(len(m) > size and m.startswith(tail) for m in markers):
            return text[:-size]
    return text


def _check_sampling_args(num_candidates: int, temperature: float, top_p: float, max_new_tokens: int) -> None:
    if num_candidates < 1:
        raise ValueError(f"num_candidates must be >= 1, got {num_candidates}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")


def padding_buckets(lengths: Sequence[int], max_padding: float = 0.25) -> list[list[int]]:
    """Indices of `lengths` sorted shortest first and cut into batches whose left padding stays
    under `max_padding` of their real tokens.

    A batch pads every row to its longest one, and each padding token costs a whole token of
    prefill and KV cache on every decoding step: one 2,000-token self-instruct prompt among
    ~400-token ones (a long pool example) made a batch of 8 ~3x the work of its real tokens.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    buckets: list[list[int]] = []
    for i in order:
        bucket = buckets[-1] if buckets else None
        if bucket is not None:
            real = sum(lengths[j] for j in bucket) + lengths[i]
            if lengths[i] * (len(bucket) + 1) <= (1 + max_padding) * real:
                bucket.append(i)
                continue
        buckets.append([i])
    return buckets


def render_prompts(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Messages]) -> list[str]:
    """Chat-template each prompt and open the assistant turn (the text the policy continues)."""
    return [
        tokenizer.apply_chat_template(list(p), add_generation_prompt=True, tokenize=False) for p in prompts
    ]


def eos_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every id that ends a response: the generation config's EOS (int or list) and the tokenizer's."""
    configured = model.generation_config.eos_token_id
    ids = configured if isinstance(configured, list) else [configured]
    ids = [i for i in [*ids, tokenizer.eos_token_id] if i is not None]
    if not ids:
        raise ValueError(
            "the model has no EOS token id (generation_config.eos_token_id and tokenizer.eos_token)"
        )
    return sorted(set(ids))


def _batch_seed(seed: int, first_prompt: int) -> int:
    # Distinct, reproducible stream per batch; the multiplier keeps run seed s+1 from replaying
    # run seed s shifted by one batch.
    return (seed * 1_000_003 + first_prompt) % (2**63)


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch for one batch without disturbing the caller's global RNG state."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@contextmanager
def decoding_attention(model: PreTrainedModel) -> Iterator[None]:
    """Eager attention while decoding on a CPU, the model's own choice restored afterwards.

    A decoding step asks one query per row; torch's fused CPU attention kernel (what "sdpa" runs)
    pays a fixed cost per call that dwarfs that work: in a torch.profiler trace of 192 steps of 32
    rows (SmolLM2, bf16) it was the largest item, 34% of the CPU time (bench/cpu_decoding.py times
    both). Prefill, with long queries, keeps the fused kernel, 2x faster than eager there. On a GPU
    nothing changes."""
    current = model.config._attn_implementation
    switch = model.device.type == "cpu" and current == "sdpa" and model._can_set_attn_implementation()
    if switch:
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if switch:
            model.set_attn_implementation(current)


def _can_prefill_apart(model: PreTrainedModel, input_ids: torch.Tensor) -> bool:
    """A decoder-only model whose forward takes a cache, and prompts of at least two tokens (the
    last one is left for generate to feed)."""
    return (
        input_ids.shape[1] > 1
        and not model.config.is_encoder_decoder
        and "past_key_values" in inspect.signature(model.forward).parameters
    )


def _prefill(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> DynamicCache:
    """Run prompt tokens 0..L-2 once and return their KV cache ([B, heads, L-1, dim] per layer)."""
    cache = DynamicCache(config=model.config)
    # Positions count real tokens only, as generate() does, so left padding does not shift them.
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # [B, L]
    extra = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    model(
        input_ids=input_ids[:, :-1],
        attention_mask=attention_mask[:, :-1],
        position_ids=positions[:, :-1],
        past_key_values=cache,
        use_cache=True,
        **extra,
    )
    return cache


def generate_after_prefill(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, n: int = 1, **kwargs: Any
) -> torch.Tensor:
    """`model.generate` of n rows per prompt, each prompt prefilled once beforehand.

    input_ids, attention_mask: [B, L], left-padded; returns [B * n, L + new], a prompt's n rows
    adjacent. The prompt runs once with the model's own attention and its KV cache is repeated n
    times (plain `num_return_sequences=n` would prefill it n times); decoding then runs under
    `decoding_attention`. A model that takes no cache (or one-token prompts) gets plain `generate`."""
    if not _can_prefill_apart(model, input_ids):
        return model.generate(
            input_ids=input_ids, attention_mask=attention_mask, num_return_sequences=n, **kwargs
        )
    cache = _prefill(model, input_ids, attention_mask)
    cache.batch_repeat_interleave(n)  # [B, ...] -> [B * n, ...], prompt-major like the rows below
    # generate() sees a cache holding L-1 positions and only feeds the last prompt token.
    with decoding_attention(model):
        return model.generate(
            input_ids=input_ids.repeat_interleave(n, dim=0),  # [B * n, L]
            attention_mask=attention_mask.repeat_interleave(n, dim=0),  # [B * n, L]
            past_key_values=cache,
            **kwargs,
        )


@dataclass(eq=False, repr=False)
class HFGenerator:
    """Batched sampling with transformers `generate` (see module docstring for prefill sharing)."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    batch_size: int = 8
    share_prefill: bool = True
    markers: tuple[str, ...] = field(default=END_MARKERS)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; batched generation needs one")
        specials = [t for t in self.tokenizer.all_special_tokens if t]
        self.markers = tuple(dict.fromkeys([*self.markers, *specials]))
        self._eos_ids = eos_token_ids(self.model, self.tokenizer)
        self._end_ids = {*self._eos_ids, *self.tokenizer.all_special_ids}

    def generate(
        self,
        prompts: Sequence[Messages],
        *,
        num_candidates: int,
        temperature: float,
        top_p: float,
        max_new_tokens: int,
        seed: int,
        on_batch: BatchCallback | None = None,
    ) -> GenerationResult:
        _check_sampling_args(num_candidates, temperature, top_p, max_new_tokens)
        result = GenerationResult(texts=[], lengths=[], finished=[])
        with inference(self.model):
            for start in range(0, len(prompts), self.batch_size):
                batch = prompts[start : start + self.batch_size]
                with _seeded(_batch_seed(seed, start), self.model.device):
                    part = self._generate_batch(batch, num_candidates, temperature, top_p, max_new_tokens)
                result.extend(part)
                if on_batch is not None:
                    on_batch(start + len(batch), part)
        return result

    def _generate_batch(
        self, prompts: Sequence[Messages], n: int, temperature: float, top_p: float, max_new_tokens: int
    ) -> GenerationResult:
        started = time.perf_counter()
        encoded = self.tokenizer(
            render_prompts(self.tokenizer, prompts),
            add_special_tokens=False,  # the chat template already wrote BOS where the model wants one
            padding=True,
            padding_side="left",  # decoding appends on the right, so real tokens must end flush
            return_tensors="pt",
        ).to(self.model.device)
        greedy = temperature == 0
        # Greedy decoding gives N identical candidates: decode one and copy it.
        n_decoded = 1 if greedy else n
        sequences = self._decode(
            encoded["input_ids"],
            encoded["attention_mask"],
            n_decoded,
            self._gen_kwargs(temperature, top_p, max_new_tokens),
        )  # [B * n_decoded, prompt_len + new_len]
        new_tokens = sequences[:, encoded["input_ids"].shape[1] :].tolist()  # [B * n_decoded][new_len]
        rows = [self._postprocess(tokens) for tokens in new_tokens]
        elapsed = time.perf_counter() - started
        texts, lengths, finished = [], [], []
        for p in range(len(prompts)):
            group = rows[p * n_decoded : (p + 1) * n_decoded] * (n // n_decoded)
            texts.append([r[0] for r in group])
            lengths.append([r[1] for r in group])
            finished.append([r[2] for r in group])
        generated = sum(r[1] for r in rows)
        return GenerationResult(texts, lengths, finished, elapsed_s=elapsed, generated_tokens=generated)

    def _gen_kwargs(self, temperature: float, top_p: float, max_new_tokens: int) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "eos_token_id": self._eos_ids,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if temperature == 0:
            return {**kwargs, "do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        # top_k=0 turns off transformers' default top-k of 50, so `top_p` alone truncates (as in vLLM).
        return {**kwargs, "do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}

    def _decode(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, n: int, kwargs: dict
    ) -> torch.Tensor:
        """input_ids, attention_mask: [B, L], left-padded.

        Returns [B * n, L + new], the n rows of a prompt adjacent."""
        if not self.share_prefill:
            return self.model.generate(
                input_ids=input_ids, attention_mask=attention_mask, num_return_sequences=n, **kwargs
            )
        return generate_after_prefill(self.model, input_ids, attention_mask, n, **kwargs)

    def _postprocess(self, tokens: list[int]) -> tuple[str, int, bool]:
        """New tokens of one row -> (clean text, tokens before the end, ended by a special token).

        The response ends at EOS, or at any other special token (e.g. a model that skips its
        end-of-turn and opens a new turn): decoding with skip_special_tokens would silently glue
        the next turn onto the response instead.
        """
        end = next((i for i, t in enumerate(tokens) if t in self._end_ids), None)
        length = len(tokens) if end is None else end
        text = self.tokenizer.decode(tokens[:length], skip_special_tokens=True)
        return clean_response(text, self.markers), length, end is not None


@dataclass(frozen=True)
class _VLLMRequest:
    """Everything the vLLM child process needs (picklable: it crosses a spawn boundary)."""

    model_path: str
    prompt_token_ids: list[list[int]]
    num_candidates: int
    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int
    eos_token_ids: list[int]
    trust_remote_code: bool
    dtype: str
    gpu_memory_utilization: float
    max_model_len: int | None
    tensor_parallel_size: int = 1
    visible_devices: str | None = None  # this shard's GPUs (CUDA_VISIBLE_DEVICES), None = all


def _vllm_generate_in_subprocess(request: _VLLMRequest) -> tuple[list[list[tuple[str, int, bool]]], float]:
    """Runs in a spawned child: load vLLM, sample, return [prompt][candidate] (text, length, finished)
    and the sampling time. The child exits afterwards, which frees every byte of GPU memory."""
    if request.visible_devices is not None:
        # Before anything initialises CUDA in this fresh process: the shard sees only its GPUs.
        os.environ["CUDA_VISIBLE_DEVICES"] = request.visible_devices
    from vllm import LLM, SamplingParams

    llm = LLM(
        model=request.model_path,
        seed=request.seed,
        dtype=request.dtype,
        trust_remote_code=request.trust_remote_code,
        gpu_memory_utilization=request.gpu_memory_utilization,
        max_model_len=request.max_model_len,
        tensor_parallel_size=request.tensor_parallel_size,
    )
    greedy = request.temperature == 0
    params = SamplingParams(
        n=1 if greedy else request.num_candidates,  # greedy candidates are identical: decode one
        temperature=request.temperature,
        top_p=1.0 if greedy else request.top_p,
        max_tokens=request.max_new_tokens,
        seed=request.seed,
        stop_token_ids=request.eos_token_ids,
        skip_special_tokens=True,
    )
    started = time.perf_counter()
    outputs = llm.generate(
        [{"prompt_token_ids": ids} for ids in request.prompt_token_ids], params, use_tqdm=False
    )
    elapsed = time.perf_counter() - started
    eos = set(request.eos_token_ids)
    rows = []
    for output in outputs:
        candidates = []
        for completion in output.outputs:
            token_ids = list(completion.token_ids)
            stopped = completion.finish_reason == "stop"
            length = len(token_ids) - (1 if stopped and token_ids and token_ids[-1] in eos else 0)
            candidates.append((completion.text, length, stopped))
        rows.append(candidates * (request.num_candidates // len(candidates)))
    return rows, elapsed


def shard_prompts(
    count: int, data_parallel: int, tensor_parallel: int, gpu_indices: Sequence[int]
) -> list[tuple[slice, str | None]]:
    """Contiguous prompt ranges, one per data-parallel replica, each with its `tensor_parallel`
    GPUs as a CUDA_VISIBLE_DEVICES value (None with one replica: vLLM sees the stage's GPUs)."""
    replicas = max(1, min(data_parallel, count))
    bounds = [round(i * count / replicas) for i in range(replicas + 1)]
    shards = []
    for i in range(replicas):
        gpus = gpu_indices[i * tensor_parallel : (i + 1) * tensor_parallel]
        visible = ",".join(str(g) for g in gpus) if replicas > 1 and gpus else None
        shards.append((slice(bounds[i], bounds[i + 1]), visible))
    return shards


@dataclass(eq=False, repr=False)
class VLLMGenerator:
    """vLLM sampling of a saved model folder, in a child process (module docstring)."""

    model_path: str | Path
    tokenizer: PreTrainedTokenizerBase
    eos_ids: list[int]
    trust_remote_code: bool = False
    dtype: str = "auto"
    gpu_memory_utilization: float = 0.85
    max_model_len: int | None = None
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    gpu_indices: tuple[int, ...] = ()  # the GPUs to spread the shards over (empty: let vLLM pick)
    markers: tuple[str, ...] = field(default=END_MARKERS)

    def __post_init__(self) -> None:
        require_vllm()

    def generate(
        self,
        prompts: Sequence[Messages],
        *,
        num_candidates: int,
        temperature: float,
        top_p: float,
        max_new_tokens: int,
        seed: int,
        on_batch: BatchCallback | None = None,
    ) -> GenerationResult:
        _check_sampling_args(num_candidates, temperature, top_p, max_new_tokens)
        token_ids = [
            self.tokenizer(text, add_special_tokens=False)["input_ids"]
            for text in render_prompts(self.tokenizer, prompts)
        ]
        requests = [
            _VLLMRequest(
                model_path=str(self.model_path),
                prompt_token_ids=token_ids[rows],
                num_candidates=num_candidates,
                temperature=temperature,
                top_p=top_p,
                max_new_tokens=max_new_tokens,
                seed=_batch_seed(seed, rows.start),
                eos_token_ids=self.eos_ids,
                trust_remote_code=self.trust_remote_code,
                dtype=self.dtype,
                gpu_memory_utilization=self.gpu_memory_utilization,
                max_model_len=self.max_model_len,
                tensor_parallel_size=self.tensor_parallel_size,
                visible_devices=visible,
            )
            for rows, visible in shard_prompts(
                len(token_ids), self.data_parallel_size, self.tensor_parallel_size, self.gpu_indices
            )
        ]
        # spawn, not fork: a forked child would inherit the parent's CUDA state, which CUDA forbids.
        # Replicas run side by side; leaving the block joins them, and with them their GPU memory.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=len(requests), mp_context=context) as pool:
            parts = list(pool.map(_vllm_generate_in_subprocess, requests))
        rows = [row for part, _ in parts for row in part]
        elapsed = max(seconds for _, seconds in parts)
        result = GenerationResult(
            texts=[[clean_response(t, self.markers) for t, _, _ in row] for row in rows],
            lengths=[[n for _, n, _ in row] for row in rows],
            finished=[[f for _, _, f in row] for row in rows],
            elapsed_s=elapsed,
            generated_tokens=sum(n for row in rows for _, n, _ in row[: 1 if temperature == 0 else None]),
        )
        if on_batch is not None:
            on_batch(len(prompts), result)
        return result


def require_vllm() -> None:
    """Fail early, in the parent process, with an actionable message when vLLM is missing."""
    if importlib.util.find_spec("vllm") is None:
        raise ImportError(
            "generation.backend 'vllm' needs vLLM, which is not installed. Install the GPU extra "
            "(pip install 'aipo-lab[gpu]') or use generation.backend: hf."
        )


def eos_ids_of_folder(model_path: str | Path, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """`eos_token_ids` of a saved model without loading its weights (generation config, else config)."""
    from transformers import AutoConfig, GenerationConfig

    try:
        configured = GenerationConfig.from_pretrained(model_path).eos_token_id
    except OSError:  # no generation_config.json
        configured = AutoConfig.from_pretrained(model_path).eos_token_id
    ids = configured if isinstance(configured, list) else [configured]
    ids = [i for i in [*ids, tokenizer.eos_token_id] if i is not None]
    if not ids:
        raise ValueError(f"{model_path}: no EOS token id in the generation config, config or tokenizer")
    return sorted(set(ids))


def vllm_generator(
    config: GenerationConfig,
    model_path: str | Path,
    tokenizer: PreTrainedTokenizerBase,
    *,
    placement: Any,
    trust_remote_code: bool = False,
) -> VLLMGenerator:
    """The vllm backend over `placement`'s GPUs (an `aipo_core.devices.Placement` of
    tensor_parallel_size × data_parallel_size GPUs), in the placement's dtype."""
    require_vllm()
    return VLLMGenerator(
        model_path,
        tokenizer,
        eos_ids=eos_ids_of_folder(model_path, tokenizer),
        trust_remote_code=trust_remote_code,
        dtype=str(placement.compute_dtype).removeprefix("torch."),
        gpu_memory_utilization=config.gpu_memory_utilization,
        tensor_parallel_size=config.tensor_parallel_size,
        data_parallel_size=config.data_parallel_size,
        gpu_indices=tuple(gpu.index for gpu in placement.gpus),
    )


def make_generator(
    config: GenerationConfig,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    model_path: str | Path | None = None,
    trust_remote_code: bool = False,
) -> Generator:
    """The generator selected by `config.backend`. vLLM loads weights itself, from `model_path`
    (the policy's `save_pretrained` folder, tokenizer included)."""
    if config.backend == "hf":
        return HFGenerator(model, tokenizer, batch_size=config.batch_size)
    if config.backend == "vllm":
        require_vllm()
        if model_path is None:
            raise ValueError("generation.backend 'vllm' needs model_path (a save_pretrained folder)")
        return VLLMGenerator(
            model_path,
            tokenizer,
            eos_ids=eos_token_ids(model, tokenizer),
            trust_remote_code=trust_remote_code,
            gpu_memory_utilization=config.gpu_memory_utilization,
            tensor_parallel_size=config.tensor_parallel_size,
            data_parallel_size=config.data_parallel_size,
        )
    raise ValueError(f"generation.backend: unknown backend {config.backend!r} (expected 'hf' or 'vllm')")


def _validated_instructions(instructions: Sequence[dict]) -> list[tuple[str, str]]:
    pairs = []
    for i, record in enumerate(instructions):
        rid, text = record.get("id"), record.get("instruction")
        if not isinstance(rid, str) or not rid:
            raise ValueError(f"instructions[{i}].id: expected a non-empty string, got {rid!r}")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"instructions[{i}].instruction: expected a non-empty string, got {text!r}")
        pairs.append((rid, text))
    return pairs


def _length_stats(result: GenerationResult) -> dict[str, float]:
    """Throughput and candidate-length summary (0.0 when there is nothing to summarise)."""
    flat = [n for row in result.lengths for n in row]
    done = [f for row in result.finished for f in row]
    return {
        "tokens_per_s": result.tokens_per_s,
        "length_mean": sum(flat) / len(flat) if flat else 0.0,
        "length_min": float(min(flat, default=0)),
        "length_max": float(max(flat, default=0)),
        "finished_fraction": sum(done) / len(done) if done else 0.0,
    }


def generate_candidates(
    instructions: Sequence[dict],
    generator: Generator,
    config: GenerationConfig,
    *,
    seed: int,
    sink: Sink | None = None,
) -> tuple[list[dict], dict[str, float]]:
    """instructions.jsonl records -> (candidates.jsonl records, summary stats).

    Each instruction becomes one user turn. A record holds, per candidate, its text, its length in
    generated tokens (`lengths`) and whether it stopped at EOS (`finished`; False = cut off at
    max_new_tokens: the rank stage does not train on it unless generation.keep_unfinished). The
    stats are throughput (`tokens_per_s`, `generated_tokens`, `elapsed_s`) and candidate lengths
    in tokens (`length_mean|min|max`, `finished_fraction` = share that stopped at EOS rather than
    at max_new_tokens). With a `sink`,
    every generator batch emits a progress event and a `generate/*` metric event (step = batch
    index), and the end a `generate/total_*` metric event with the stats.
    """
    validated = _validated_instructions(instructions)
    prompts = [[{"role": "user", "content": text}] for _, text in validated]
    batches = 0

    def on_batch(done: int, part: GenerationResult) -> None:
        nonlocal batches
        if sink is not None:
            values = {f"generate/{k}": v for k, v in _length_stats(part).items()}
            sink({"kind": "metric", "step": batches, "values": values})
            message = f"generated {done}/{len(prompts)}"
            sink({"kind": "progress", "fraction": done / len(prompts), "message": message})
        batches += 1

    result = generator.generate(
        prompts,
        num_candidates=config.num_candidates,
        temperature=config.temperature,
        top_p=config.top_p,
        max_new_tokens=config.max_new_tokens,
        seed=seed,
        on_batch=on_batch,
    )
    stats = {
        **_length_stats(result),
        "generated_tokens": result.generated_tokens,
        "elapsed_s": result.elapsed_s,
    }
    if sink is not None:
        sink(
            {
                "kind": "metric",
                "step": batches,
                "values": {f"generate/total_{k}": v for k, v in stats.items()},
            }
        )
    records = [
        {
            "id": rid,
            "instruction": text,
            "prompt": prompt,
            "candidates": texts,
            "lengths": lengths,
            "finished": finished,
        }
        for (rid, text), prompt, texts, lengths, finished in zip(
            validated, prompts, result.texts, result.lengths, result.finished, strict=True
        )
    ]
    return records, stats
