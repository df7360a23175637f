"""Model loading: built-in tiny/SmolLM2 models, local folders, clear errors, and the loading policy
(no code shipped with a model runs, hub ids off the allow-list fetch nothing)."""

import json

import pytest
import torch

from aipo_core.access import BUILTIN_MODELS, AccessError, ModelAccess
from aipo_core.config import JudgeConfig
from aipo_core.evaluation import make_judge
from aipo_core.models import BUILTIN_MODELS as BUILDERS
from aipo_core.models import (
    load_model_and_tokenizer,
    load_sentence_encoder,
    load_sequence_classifier,
    load_tokenizer,
    resolve_model_path,
)
from tests.aipo_core.checkpoints import copy_checkpoint, plant_code


def test_tiny_random_llama_is_identical_across_builds(tmp_path):
    a, tok = load_model_and_tokenizer("tiny-random-llama", cache_dir=tmp_path / "a")
    b, _ = load_model_and_tokenizer("tiny-random-llama", cache_dir=tmp_path / "b")
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), name
    assert tok.pad_token is not None and tok.eos_token == "<|im_end|>"


def test_tiny_random_llama_has_chat_template_and_round_trips_text(tmp_path):
    _, tok = load_model_and_tokenizer("tiny-random-llama", cache_dir=tmp_path)
    text = tok.apply_chat_template(
        [{"role": "user", "content": "Name a fruit. Über-naïve ünïcode ok?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert text.endswith("<|im_start|>assistant\n")
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text


def test_tiny_random_llama_generates_offline(tmp_path):
    model, tok = load_model_and_tokenizer("tiny-random-llama", cache_dir=tmp_path)
    enc = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**enc, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == enc["input_ids"].shape[1] + 5


def test_local_folder_loads_and_bad_folder_is_named(tmp_path):
    folder = resolve_model_path("tiny-random-llama", tmp_path)
    access = ModelAccess(data_roots=(tmp_path.resolve(),))
    model, _ = load_model_and_tokenizer(str(folder), access=access)
    assert model.config.num_hidden_layers == 2
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    with pytest.raises(AccessError, match="model: .*not-a-model has no readable config.json"):
        resolve_model_path(str(empty), access=access)


def test_builtin_names_agree_with_the_access_policy():
    assert set(BUILDERS) == BUILTIN_MODELS


# --------------------------------------------------------------------------- the loading policy


@pytest.fixture
def trapped(tmp_path):
    """A data root with a tiny Llama (config + tokenizer) that ships import-time code via auto_map."""
    source = resolve_model_path("tiny-random-llama", tmp_path / "cache")
    root = tmp_path / "data"
    folder = copy_checkpoint(source, root / "custom-llama")
    marker = tmp_path / "MARKER"
    plant_code(folder, marker)
    return folder, marker, ModelAccess(data_roots=(root.resolve(),))


LOADERS = {
    "policy": lambda spec, access, remote: load_model_and_tokenizer(
        spec, access=access, trust_remote_code=remote
    ),
    "tokenizer": lambda spec, access, remote: load_tokenizer(spec, access=access, trust_remote_code=remote),
    "reward model": lambda spec, access, remote: load_sequence_classifier(
        spec, access=access, trust_remote_code=remote
    ),
    "judge": lambda spec, access, remote: make_judge(
        JudgeConfig(kind="llm_judge", model=spec), access=access, trust_remote_code=remote, device="cpu"
    ),
}


@pytest.mark.parametrize("loader", LOADERS)
def test_code_shipped_with_a_checkpoint_never_runs_without_consent(trapped, loader):
    folder, marker, access = trapped
    with pytest.raises(AccessError, match="remote code is disabled") as refused:
        LOADERS[loader](str(folder), access, False)
    assert refused.value.kind == "remote_code_refused"
    # Asking for it in the config is not enough: the operator has not allowed remote code.
    with pytest.raises(AccessError, match="AIPO_ALLOW_TRUST_REMOTE_CODE") as refused:
        LOADERS[loader](str(folder), access, True)
    assert refused.value.kind == "trust_remote_code_refused"
    assert not marker.exists()


def test_auto_map_alone_is_refused_and_names_the_file(trapped):
    folder, marker, access = trapped
    for module in folder.glob("*.py"):
        module.unlink()
    with pytest.raises(AccessError, match=r"config.json has 'auto_map'"):
        load_model_and_tokenizer(str(folder), access=access)
    config = json.loads((folder / "config.json").read_text())
    del config["auto_map"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(AccessError, match=r"tokenizer_config.json has 'auto_map'"):
        load_tokenizer(str(folder), access=access)
    assert not marker.exists()


def test_remote_code_runs_only_with_operator_consent_and_the_config_flag(trapped, tmp_path, monkeypatch):
    """The gate is the only switch: with both, transformers imports the shipped tokenizer code."""
    folder, marker, access = trapped
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    consenting = ModelAccess(allow_remote_code=True, data_roots=access.data_roots)
    load_tokenizer(str(folder), access=consenting, trust_remote_code=True)
    assert marker.exists()


def test_hub_model_off_the_allow_list_fetches_nothing(monkeypatch):
    import huggingface_hub

    fetched = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: fetched.append(a))
    access = ModelAccess(hub_models=("HuggingFaceTB/*",))
    for spec, loader in (("evil/phi-model", load_model_and_tokenizer), ("evil/rm", load_sequence_classifier)):
        with pytest.raises(AccessError, match="not on this server's allow-list") as refused:
            loader(spec, access=access)
        assert refused.value.kind == "hub_model_not_allowed"
    assert fetched == []


def test_symlink_out_of_the_data_root_inside_a_checkpoint_is_refused(tmp_path):
    source = resolve_model_path("tiny-random-llama", tmp_path / "cache")
    root = tmp_path / "data"
    folder = copy_checkpoint(source, root / "llama")
    secret = tmp_path / "secret.json"
    secret.write_text("{}")
    (folder / "tokenizer.json").unlink()
    (folder / "tokenizer.json").symlink_to(secret)
    with pytest.raises(AccessError, match="outside the allowed data roots"):
        load_tokenizer(str(folder), access=ModelAccess(data_roots=(root.resolve(),)))


def test_sentence_encoder_loads_from_its_package_folder():
    encoder = load_sentence_encoder("cpu")
    assert encoder.encode(["a sentence"]).shape == (1, 384)


@pytest.mark.slow
def test_smollm2_answers_the_capital_of_france():
    model, tok = load_model_and_tokenizer("smollm2-135m-instruct")
    enc = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**enc, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, enc["input_ids"].shape[1] :])
    # The GGUF origin must not leak into the cached folder: Trainer refuses quantized models.
    assert getattr(model.config, "quantization_config", None) is None
    assert not getattr(model, "is_quantized", False)
