"""Tiny checkpoints built offline for loader tests: a DeBERTa PairRM, and booby-trapped variants.

`plant_code` turns a checkpoint folder into an attack: a `.py` module that writes a marker file
the moment it is imported, wired in through `auto_map` the way a hub repo ships custom code.
Loader tests assert the marker never appears.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import torch

TOKENIZER_CORPUS = [
    "Name a fruit that is rich in vitamin C.",
    "An orange.",
    "Oranges and kiwis are rich in vitamin C.",
    "I like cars.",
    "Lemon",
    "hello how are you fine thanks bye good bad answer question",
]


def tiny_wordpiece_tokenizer(folder: Path):
    """A BERT/DeBERTa-style tokenizer ([CLS] text [SEP]) trained offline on a few words."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
    core = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials)
    core.train_from_iterator(TOKENIZER_CORPUS, trainer)
    cls_id, sep_id = core.token_to_id("[CLS]"), core.token_to_id("[SEP]")
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        unk_token="[UNK]",
        mask_token="[MASK]",
        model_max_length=512,
    )
    tokenizer.save_pretrained(folder)
    return tokenizer


def tiny_deberta_config(tokenizer, **extra):
    from transformers import DebertaV2Config

    return DebertaV2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        relative_attention=True,
        position_buckets=64,
        pos_att_type=["p2c", "c2p"],
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


def build_tiny_pairrm(root: Path, *, backbone_name: str = "backbone") -> Path:
    """A PairRM-shaped checkpoint under `root`: config.json is an llm-blender RankerConfig (like the
    hub's llm-blender/PairRM, whose backbone is microsoft/deberta-v3-large) + model.safetensors,
    and the backbone folder it names. Returns the checkpoint folder."""
    import safetensors.torch
    from transformers import DebertaV2Model

    from aipo_core.pairrm_compat import import_llm_blender

    llm_blender = import_llm_blender()
    from llm_blender.blender.blender_utils import load_ranker

    backbone, ranker_dir = root / "backbone", root / "ranker"
    tokenizer = tiny_wordpiece_tokenizer(backbone)
    torch.manual_seed(0)
    DebertaV2Model(tiny_deberta_config(tokenizer)).save_pretrained(backbone)
    ranker_config = {
        "ranker_type": "pairranker",
        "model_type": "deberta",
        "model_name": str(backbone),
        "source_maxlength": 64,
        "candidate_maxlength": 32,
        "n_tasks": 1,
        "drop_out": 0.05,
        "fp16": False,
    }
    ranker_dir.mkdir(parents=True)
    (ranker_dir / "config.json").write_text(json.dumps(ranker_config))
    with warnings.catch_warnings():  # dataclasses-json warns about every None field of RankerConfig
        warnings.simplefilter("ignore", RuntimeWarning)
        config = llm_blender.RankerConfig.from_dict({**ranker_config, "cache_dir": str(root)})
    # llm-blender builds the (benign) untrained ranker whose weights make the checkpoint.
    ranker, _, _ = load_ranker(config)
    safetensors.torch.save_model(ranker, str(ranker_dir / "model.safetensors"))
    if backbone_name != "backbone":
        # Renamed only now: llm-blender itself treats a backbone whose name contains "phi" differently.
        backbone = backbone.rename(root / backbone_name)
        (ranker_dir / "config.json").write_text(json.dumps({**ranker_config, "model_name": str(backbone)}))
    return ranker_dir


def payload(marker: Path) -> str:
    """Python source that writes `marker` when imported."""
    return f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\n"


def plant_code(folder: Path, marker: Path, *, tokenizer: bool = True, model: bool = True) -> None:
    """Ship import-time code with the checkpoint in `folder`, as a hub repo with custom code does.

    The tokenizer variant is what llm-blender loads with `trust_remote_code=True` when the backbone
    name contains "phi"; the model variant what transformers imports for an `auto_map` config.
    """
    if tokenizer:
        (folder / "tokenization_evil.py").write_text(
            payload(marker)
            + "from transformers import PreTrainedTokenizerFast\n"
            + "class EvilTokenizer(PreTrainedTokenizerFast):\n    pass\n"
        )
        path = folder / "tokenizer_config.json"
        config = json.loads(path.read_text()) if path.exists() else {}
        config["auto_map"] = {"AutoTokenizer": [None, "tokenization_evil.EvilTokenizer"]}
        path.write_text(json.dumps(config))
    if model:
        (folder / "modeling_evil.py").write_text(payload(marker))
        path = folder / "config.json"
        config = json.loads(path.read_text())
        config["auto_map"] = {
            "AutoModel": "modeling_evil.EvilModel",
            "AutoModelForCausalLM": "modeling_evil.EvilModel",
            "AutoModelForSequenceClassification": "modeling_evil.EvilModel",
        }
        path.write_text(json.dumps(config))


def copy_checkpoint(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target
