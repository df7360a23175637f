"""Model resolution: built-in tiny/SmolLM2 models, local folders, clear errors."""

import pytest
import torch

from aipo_core.models import load_model_and_tokenizer, resolve_model_path


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
    model, _ = load_model_and_tokenizer(str(folder))
    assert model.config.num_hidden_layers == 2
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="model: .*not-a-model exists but has no config.json"):
        resolve_model_path(str(empty))


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
