"""llm-blender 0.0.2 (PairRM), wrapped in one place: importable under transformers 5, loaded safely.

Loading. `Blender.loadranker` must never see a user-chosen checkpoint: it downloads whatever id it
is given, and loads with `trust_remote_code=True` whenever the checkpoint's model type starts with
"phi" or its backbone name contains "phi", which runs Python shipped with the checkpoint. So
`load_pairrm` loads PairRM itself, through the checked loaders of `aipo_core.models`:

1. the checkpoint folder (a checked local path, or an allowed hub id whose snapshot is fetched
   without any `*.py`) must contain no Python and no `auto_map`;
2. its config.json must be PairRM's shape: `ranker_type: pairranker`, `model_type: deberta`;
3. the backbone it names (`model_name`: a hub id on the allow-list, or a checked path) must be a
   DeBERTa encoder, loaded with remote code off;
4. llm-blender's own `CrossCompareReranker` and collator are built around that backbone and the
   checkpoint's weights are loaded from safetensors (or `torch.load(weights_only=True)`).

The resulting `Blender` ranks and compares exactly as one built by `loadranker` would.

Compatibility. llm-blender was written against transformers 4 and touches two names that
transformers 5 removed:

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

import logging
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

from aipo_core.access import PAIRRM_HUB_ID, AccessError, ModelAccess

log = logging.getLogger(__name__)

PAIRRM_RANKER_TYPE = "pairranker"
PAIRRM_MODEL_TYPE = "deberta"
PAIRRM_BACKBONE_TYPES = frozenset({"deberta", "deberta-v2"})
# What a PairRM hub snapshot needs; never code.
_SNAPSHOT_PATTERNS = ["*.json", "*.safetensors", "*.bin", "*.model", "*.txt"]

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


def pairrm_folder(spec: str, access: ModelAccess, field: str) -> tuple[Path, bool]:
    """The checkpoint folder for a PairRM spec, and whether it is a trusted (hub-cache) folder."""
    kind = access.check_model_spec(spec, field)
    if kind == "path":
        return access.check_path(spec, field), False
    if kind == "hub":
        from huggingface_hub import snapshot_download

        try:
            folder = snapshot_download(
                spec, allow_patterns=_SNAPSHOT_PATTERNS, local_files_only=access.offline
            )
        except Exception as exc:  # network, missing or gated repo: all mean "cannot load it"
            raise OSError(f"{field}: cannot fetch PairRM checkpoint {spec!r}: {exc}") from exc
        return Path(folder), True
    raise AccessError(
        field, f"{spec!r} is not a PairRM checkpoint (a hub id or a folder)", "invalid_model_spec"
    )


def _ranker_config(config: dict[str, Any], folder: Path, field: str) -> dict[str, Any]:
    """The checkpoint's RankerConfig fields, refused unless they describe PairRM's architecture."""
    shape = (config.get("ranker_type"), config.get("model_type"))
    if shape != (PAIRRM_RANKER_TYPE, PAIRRM_MODEL_TYPE):
        raise AccessError(
            field,
            f"{folder}/config.json is not a PairRM checkpoint: expected ranker_type "
            f"{PAIRRM_RANKER_TYPE!r} and model_type {PAIRRM_MODEL_TYPE!r}, got {shape[0]!r} and {shape[1]!r}",
            "not_a_pairrm_checkpoint",
        )
    if not isinstance(config.get("model_name"), str) or not config["model_name"]:
        raise AccessError(
            field, f"{folder}/config.json names no backbone (model_name)", "not_a_pairrm_checkpoint"
        )
    llm_blender = import_llm_blender()
    known = set(llm_blender.RankerConfig.__dataclass_fields__)
    return {key: value for key, value in config.items() if key in known}


def _load_weights(ranker: Any, folder: Path, field: str) -> None:
    """PairRM's trained weights into `ranker`; every parameter must be covered."""
    import torch

    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        state = load_file(str(folder / "model.safetensors"))
    elif (folder / "pytorch_model.bin").is_file():
        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"{field}: {folder} has neither model.safetensors nor pytorch_model.bin")
    result = ranker.load_state_dict(state, strict=False)
    parameters = dict(ranker.named_parameters())
    missing = [key for key in result.missing_keys if key in parameters]
    if missing:
        raise ValueError(
            f"{field}: the checkpoint in {folder} lacks {len(missing)} weights, e.g. {missing[:3]}"
        )
    if result.unexpected_keys:
        log.warning("%s: ignoring %d unexpected keys in %s", field, len(result.unexpected_keys), folder)


def load_pairrm(
    spec: str = PAIRRM_HUB_ID, *, access: ModelAccess, field: str = "ranker.model", device: str = "cpu"
) -> Any:
    """A ready llm-blender `Blender` holding the PairRM checkpoint `spec` (see the module docstring)."""
    from aipo_core.models import load_encoder

    folder, trusted = pairrm_folder(spec, access, field)
    config = access.check_checkpoint(folder, field=field, remote_code=False, trusted=trusted)
    fields = _ranker_config(config, folder, field)
    backbone, tokenizer = load_encoder(
        fields["model_name"],
        access=access,
        field=f"{field} (the PairRM backbone, model_name in {folder}/config.json)",
        model_types=PAIRRM_BACKBONE_TYPES,
    )
    llm_blender = import_llm_blender()
    from llm_blender.pair_ranker.model_util import build_collator
    from llm_blender.pair_ranker.ranker import CrossCompareReranker

    with warnings.catch_warnings():
        # dataclasses-json warns about each optional RankerConfig field left None; that says
        # nothing about the checkpoint.
        warnings.filterwarnings("ignore", category=RuntimeWarning, module="dataclasses_json")
        ranker_config = llm_blender.RankerConfig.from_dict(
            {**fields, "load_checkpoint": str(folder), "cache_dir": None, "device": device}
        )
    # The order of llm-blender's load_ranker: the collator adds PairRM's marker tokens
    # (<|source|>, <|candidate1|>, ...) to the tokenizer, then the embeddings grow to match.
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    collator = build_collator(
        PAIRRM_RANKER_TYPE, tokenizer, ranker_config.source_maxlength, ranker_config.candidate_maxlength
    )
    backbone.config.out_hidden_state_size = backbone.config.hidden_size
    backbone.resize_token_embeddings(len(tokenizer))
    ranker = CrossCompareReranker(backbone, ranker_config, tokenizer)
    _load_weights(ranker, folder, field)
    half = device.startswith(("cuda", "mps")) and bool(ranker_config.fp16)
    ranker = (ranker.half() if half else ranker.float()).to(device).eval()
    blender = llm_blender.Blender(llm_blender.BlenderConfig(device=device, use_tqdm=False))
    blender.ranker_config = ranker_config
    blender.ranker, blender.ranker_tokenizer, blender.ranker_collator = ranker, tokenizer, collator
    return blender
