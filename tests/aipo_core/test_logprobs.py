"""Chunked / hidden-state log-prob routes agree with the naive log_softmax + gather."""

from __future__ import annotations

import pytest
import torch

from aipo_core.logprobs import (
    add_sequence_logps_head,
    completion_logps,
    logit_transform,
    restore_forward,
    sequence_logps,
    sequence_logps_from_hidden,
    sequence_logps_head,
    token_logps,
)
from aipo_core.models import load_model_and_tokenizer


def naive_sequence_logps(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The textbook version: full float32 log-softmax, then gather; logits [B, T, V] -> [B]."""
    logps = logits.float().log_softmax(-1)  # [B, T, V]
    picked = logps.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # [B, T]
    return (picked * mask).sum(-1)


@pytest.fixture
def rng() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def random_batch(rng, batch=3, length=11, vocab=97, hidden=16):
    logits = torch.randn(batch, length, vocab, generator=rng) * 4
    targets = torch.randint(0, vocab, (batch, length), generator=rng)
    mask = (torch.rand(batch, length, generator=rng) > 0.4).long()
    mask[0] = 0  # a fully masked row sums to exactly 0
    hidden_states = torch.randn(batch, length, hidden, generator=rng)
    weight = torch.randn(vocab, hidden, generator=rng) / hidden**0.5
    return logits, targets, mask, hidden_states, weight


@pytest.mark.parametrize("chunk_rows", [1, 5, 256])
def test_sequence_logps_equals_naive_with_masking(rng, chunk_rows):
    logits, targets, mask, _, _ = random_batch(rng)
    targets = targets.masked_fill(mask == 0, -100)  # ignore-index padding must not break the gather
    ours = sequence_logps(logits, targets, mask, chunk_rows=chunk_rows)
    expected = naive_sequence_logps(logits, targets, mask)
    assert ours.shape == (3,)
    assert ours[0].item() == 0.0
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_token_logps_accepts_bf16_logits_and_returns_float32(rng):
    logits, targets, _, _, _ = random_batch(rng)
    ours = token_logps(logits.bfloat16(), targets, chunk_rows=4)
    expected = logits.bfloat16().float().log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_token_logps_values_and_gradient_with_autograd_equal_naive(rng):
    logits, targets, _, _, _ = random_batch(rng)
    ours_in = logits.clone().requires_grad_()
    naive_in = logits.clone().requires_grad_()
    ours = token_logps(ours_in, targets, chunk_rows=7)  # the autograd (logsumexp) branch
    naive = naive_in.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(ours, naive, atol=1e-5, rtol=0)
    ours.sum().backward()
    naive.sum().backward()
    torch.testing.assert_close(ours_in.grad, naive_in.grad, atol=1e-6, rtol=0)


@pytest.mark.parametrize("vocab_chunk", [8, 97, 8192])
def test_hidden_route_values_and_gradients_equal_naive(rng, vocab_chunk):
    _, targets, mask, hidden_states, weight = random_batch(rng)
    h1, w1 = hidden_states.clone().requires_grad_(), weight.clone().requires_grad_()
    h2, w2 = hidden_states.clone().requires_grad_(), weight.clone().requires_grad_()
    ours = sequence_logps_from_hidden(h1, w1, targets, mask, vocab_chunk=vocab_chunk)
    expected = naive_sequence_logps(h2 @ w2.T, targets, mask)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    weights = torch.tensor([0.5, -1.0, 2.0])  # a non-uniform upstream gradient
    (ours * weights).sum().backward()
    (expected * weights).sum().backward()
    torch.testing.assert_close(h1.grad, h2.grad, atol=1e-5, rtol=0)
    torch.testing.assert_close(w1.grad, w2.grad, atol=1e-5, rtol=0)


def test_hidden_route_applies_bias_scale_and_softcap(rng):
    _, targets, mask, hidden_states, weight = random_batch(rng)
    bias = torch.randn(weight.shape[0], generator=rng)
    ours = sequence_logps_from_hidden(
        hidden_states, weight, targets, mask, bias, logit_scale=0.5, softcap=3.0, vocab_chunk=16
    )
    logits = 3.0 * torch.tanh((hidden_states @ weight.T + bias) * 0.5 / 3.0)
    torch.testing.assert_close(ours, naive_sequence_logps(logits, targets, mask), atol=1e-5, rtol=0)


def test_logit_transform_reads_config_attributes():
    from transformers import GraniteConfig, LlamaConfig

    assert logit_transform(LlamaConfig()) == (1.0, None)
    assert logit_transform(GraniteConfig(logits_scaling=8.0)) == (0.125, None)


@pytest.fixture(scope="module")
def tiny():
    model, tokenizer = load_model_and_tokenizer("tiny-random-llama")
    return model.eval(), tokenizer


def test_completion_logps_of_a_model_equal_naive_logits(tiny, rng):
    model, _ = tiny
    vocab = model.config.vocab_size
    input_ids = torch.randint(0, vocab, (4, 13), generator=rng)  # [B, T]
    attention_mask = torch.ones_like(input_ids)
    attention_mask[2, 9:] = 0  # right padding
    completion_mask = torch.zeros_like(input_ids)
    completion_mask[:, 5:] = 1
    completion_mask[2, 9:] = 0
    with torch.no_grad():
        out = completion_logps(model, input_ids, attention_mask, completion_mask)
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits  # [B, T, V]
    expected = naive_sequence_logps(logits[:, :-1], input_ids[:, 1:], completion_mask[:, 1:])
    torch.testing.assert_close(out.logps, expected, atol=1e-4, rtol=0)
    assert out.lengths.tolist() == [8, 8, 4, 8]


def test_head_patch_keeps_the_plain_forward_and_is_removed(tiny, rng):
    model, _ = tiny
    input_ids = torch.randint(0, model.config.vocab_size, (2, 6), generator=rng)
    mask = torch.ones_like(input_ids)
    with torch.no_grad():
        before = model(input_ids=input_ids, attention_mask=mask).logits
        with sequence_logps_head(model):
            assert "forward" in vars(model)
            patched_plain = model(input_ids=input_ids, attention_mask=mask).logits
            scored = model(input_ids=input_ids, attention_mask=mask, completion_mask=mask)
        assert "forward" not in vars(model)
    torch.testing.assert_close(patched_plain, before)
    assert scored.logps.shape == (2,) and scored.lengths.tolist() == [5, 5]
    assert add_sequence_logps_head(model) is True
    assert add_sequence_logps_head(model) is False  # idempotent
    restore_forward(model)
    assert "forward" not in vars(model)
