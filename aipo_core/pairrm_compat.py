"""Make llm-blender 0.0.2 (PairRM) importable under transformers 5, in one place.

llm-blender was written against transformers 4 and touches two names that transformers 5 removed:

* `transformers.utils.hub.TRANSFORMERS_CACHE`, imported at module level by `llm_blender.blender`
  (used only as the default `cache_dir`). Transformers 4 defined it as the Hugging Face hub cache,
  so we restore exactly that value.
* `PreTrainedTokenizerBase.batch_encode_plus`, called by `llm_blender.pair_ranker.collator.encode_texts`.
  In transformers 4 it was an alias of `tokenizer(list_of_texts, ...)`, which is what we reinstate.

Both shims only add what is missing (never overwrite), so applying them twice, or on a transformers
version that still has the names, changes nothing. Everything that imports llm-blender goes through
`import_llm_blender()` so the order "shim first, import second" holds everywhere.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

_applied = False


def _batch_encode_plus(self: Any, batch_text_or_text_pairs: Any, **kwargs: Any) -> Any:
    """Transformers-4 `batch_encode_plus`: encode a batch by calling the tokenizer on the list."""
    return self(batch_text_or_text_pairs, **kwargs)


def apply_pairrm_compat() -> None:
    """Install the two transformers-5 shims llm-blender needs (idempotent)."""
    global _applied
    if _applied:
        return
    import transformers.utils.hub as hf_hub_utils
    from huggingface_hub.constants import HF_HUB_CACHE
    from transformers import PreTrainedTokenizerBase

    if not hasattr(hf_hub_utils, "TRANSFORMERS_CACHE"):
        hf_hub_utils.TRANSFORMERS_CACHE = HF_HUB_CACHE
    if not hasattr(PreTrainedTokenizerBase, "batch_encode_plus"):
        PreTrainedTokenizerBase.batch_encode_plus = _batch_encode_plus
    _applied = True


def import_llm_blender() -> ModuleType:
    """Import `llm_blender` after the shims; raise a clear error if it is not installed."""
    apply_pairrm_compat()
    try:
        import llm_blender
    except ImportError as exc:
        raise ImportError(
            "ranker kind 'pairrm' needs llm-blender==0.0.2 (pip install llm-blender==0.0.2)"
        ) from exc
    return llm_blender
