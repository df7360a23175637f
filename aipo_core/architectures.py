"""Names and architectures of the built-in models, importable without torch or transformers.

The launch preview counts their parameters from these constants without building or loading
anything; `aipo_core.models` builds the tiny model from TINY_LLAMA_ARCH itself, and SMOLLM2_ARCH
is the llama.* metadata of the bundled SmolLM2-135M-Instruct GGUF file.
"""

from __future__ import annotations

from typing import Any

TINY_RANDOM_LLAMA = "tiny-random-llama"
SMOLLM2 = "smollm2-135m-instruct"

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
