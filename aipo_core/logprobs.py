"""Summed log-probabilities of response tokens, without a [batch, length, vocab] log-softmax.

A preference pair is scored by log π(y | x) = Σ_t log softmax(z_t)[y_t] over the response
tokens only. The naive `logits.log_softmax(-1).gather(...)` keeps two float32 tensors of
size batch × length × vocab alive (the logits and their log-softmax): 1.6 GB each at batch 8,
length 1,024 and SmolLM2's 49,152-token vocabulary. Two cheaper routes live here:

- from logits that already exist: `token_logps` / `sequence_logps` work one chunk of rows at a
  time in float32 (log p(y) = z_y − logsumexp(z) when gradients are needed), so the extra memory
  is one chunk, never a second full-size tensor;
- from hidden states (what training and reference scoring use): `sequence_logps_from_hidden`
  projects only the response positions through the LM head with TRL's `ChunkedLogProbFunction`
  (online logsumexp over vocabulary tiles, hand-written backward), so no logits tensor exists
  at all, forward or backward.

`add_sequence_logps_head` patches a causal LM so that calling it with `completion_mask=...`
returns summed response log-probs. The trainer calls the model that way (so DDP / accelerate
wrappers see an ordinary forward), and reference scoring calls it the same way, which makes the
stored reference log-probs and the trainer's policy log-probs the same computation.

Shape letters: B sequences, T positions, V vocabulary, H hidden size, M scored tokens.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import PreTrainedModel
from transformers.utils import ModelOutput
from trl.kernels import ChunkedLogProbFunction

# Rows (token positions) per float32 chunk when starting from logits: 256 × 49,152 × 4 B ≈ 50 MB.
DEFAULT_CHUNK_ROWS = 256
# Vocabulary tile of the hidden-state route, [tokens ≤ 4,096, chunk]. On CPU, TRL folds each tile
# with ~8 full-size torch temporaries, so a 4,096-wide float32 tile (64 MB) keeps the peak near
# 0.5 GB; CUDA folds tiles in a Triton kernel, and TRL's own 32,768 is faster there.
CPU_VOCAB_CHUNK = 4096
CUDA_VOCAB_CHUNK = 32768


def default_vocab_chunk(device: torch.device) -> int:
    return CPU_VOCAB_CHUNK if device.type == "cpu" else CUDA_VOCAB_CHUNK


_HEAD_MARKER = "_aipo_sequence_logps_head"


def token_logps(logits: Tensor, targets: Tensor, *, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Tensor:
    """log softmax(logits)[target] at every position, in float32.

    logits: [..., V] (any float dtype); targets: [...] token ids aligned with the logits
    (logits[..., t, :] scores targets[..., t]; shift before calling). Returns [...] float32.
    Peak extra memory is one [chunk_rows, V] float32 chunk (plus its logsumexp scratch).
    """
    vocab = logits.shape[-1]
    flat_logits = logits.reshape(-1, vocab)  # [N, V]
    flat_targets = targets.reshape(-1, 1)  # [N, 1]
    # With autograd, z_y − logsumexp(z) saves only its input (a view of float32 logits) and [c]
    # results, where log_softmax would save a [c, V] output per chunk: the full tensor again.
    # Without autograd, the chunked fused log_softmax kernel is the faster of the two.
    needs_grad = torch.is_grad_enabled() and logits.requires_grad
    pieces = []
    for rows, picked in zip(flat_logits.split(chunk_rows), flat_targets.split(chunk_rows), strict=True):
        rows32 = rows.float()  # [c, V]; a view when the logits are already float32
        if needs_grad:
            pieces.append(rows32.gather(-1, picked).squeeze(-1) - torch.logsumexp(rows32, dim=-1))  # [c]
        else:
            pieces.append(rows32.log_softmax(-1).gather(-1, picked).squeeze(-1))  # [c]
    return torch.cat(pieces).view(targets.shape)


def sequence_logps(
    logits: Tensor, targets: Tensor, mask: Tensor, *, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> Tensor:
    """Σ_t mask[b, t] · log softmax(logits[b, t])[targets[b, t]].

    logits: [B, T, V]; targets: [B, T] (aligned, any value where mask is 0); mask: [B, T] of
    0/1. Returns [B] float32.
    """
    safe_targets = targets.masked_fill(mask == 0, 0)  # padding ids may be out of range (e.g. -100)
    per_token = token_logps(logits, safe_targets, chunk_rows=chunk_rows)  # [B, T]
    return (per_token * mask.to(per_token.dtype)).sum(dim=-1)  # [B]


def hidden_token_logps(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    bias: Tensor | None = None,
    *,
    logit_scale: float = 1.0,
    softcap: float | None = None,
    vocab_chunk: int | None = None,
) -> Tensor:
    """log softmax(logit_transform(hidden @ weight.T + bias))[target] per row, never building logits.

    hidden: [M, H]; weight: [V, H]; targets: [M]; bias: [V] or None. Returns [M] float32.
    Differentiable in hidden, weight and bias (TRL's chunked backward recomputes each tile).
    Under autocast the projection runs in the autocast dtype and the softmax statistics in float32.
    vocab_chunk: vocabulary tile width (None: `default_vocab_chunk` of the device).
    """
    chunk = vocab_chunk or default_vocab_chunk(hidden.device)
    logps, *_ = ChunkedLogProbFunction.apply(
        hidden, weight, bias, targets, 1.0, chunk, softcap, logit_scale, ()
    )
    return logps  # [M]


def sequence_logps_from_hidden(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    mask: Tensor,
    bias: Tensor | None = None,
    *,
    logit_scale: float = 1.0,
    softcap: float | None = None,
    vocab_chunk: int | None = None,
) -> Tensor:
    """Summed log-probs of the masked positions, projecting only those positions.

    hidden: [B, T, H] (hidden[b, t] predicts targets[b, t]); weight: [V, H]; targets, mask:
    [B, T]. Returns [B] float32. Prompt and padding positions are never projected, which on
    short responses skips most of the LM-head work as well as its memory.
    """
    selected = mask.bool()  # [B, T]
    rows = torch.arange(mask.shape[0], device=mask.device).unsqueeze(1).expand_as(selected)[selected]  # [M]
    token = hidden_token_logps(
        hidden[selected].to(weight.device),  # [M, H]
        weight,
        targets[selected].to(weight.device),  # [M]
        bias,
        logit_scale=logit_scale,
        softcap=softcap,
        vocab_chunk=vocab_chunk,
    )  # [M]
    sums = torch.zeros(mask.shape[0], dtype=token.dtype, device=token.device)  # [B]
    return sums.index_add(0, rows.to(token.device), token)  # [B]


def logit_transform(config) -> tuple[float, float | None]:
    """(logit_scale, final_logit_softcapping) of a model config, as its own forward applies them.

    Mirrors the attributes TRL's fused LM head reads, so models that scale or soft-cap their
    logits (Gemma, Cohere, Granite, Falcon-H1, ...) are scored exactly as their forward would.
    """
    text = config.get_text_config()
    softcap = getattr(text, "final_logit_softcapping", None)
    for name in ("logit_scale", "output_multiplier", "lm_head_multiplier"):
        value = getattr(text, name, None)
        if value is not None:
            return float(value), softcap
    scaling = getattr(text, "logits_scaling", None)
    if scaling is not None:
        return (float(scaling) if text.model_type == "hyperclovax" else 1.0 / float(scaling)), softcap
    return 1.0, softcap


@dataclass
class CompletionLogps(ModelOutput):
    """What a model patched by `add_sequence_logps_head` returns for `completion_mask=...`.

    logps: [B] summed log-probs of the completion tokens; lengths: [B] their count.
    A `ModelOutput` so accelerate's mixed-precision output conversion handles it.
    """

    logps: Tensor | None = None
    lengths: Tensor | None = None


def completion_logps(
    model: PreTrainedModel,
    input_ids: Tensor,
    attention_mask: Tensor,
    completion_mask: Tensor,
    *,
    vocab_chunk: int | None = None,
) -> CompletionLogps:
    """Summed log-probs of the completion tokens of right-padded prompt+completion sequences.

    input_ids, attention_mask, completion_mask: [B, T] (completion_mask = 1 on response tokens).
    Runs the model's backbone (no LM head), then scores position t+1 from hidden state t.
    Prefer calling a model patched by `add_sequence_logps_head` so wrappers see the forward.
    """
    backbone = model.base_model
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    head = model.get_output_embeddings()
    scored = completion_mask[:, 1:]  # [B, T-1]; position 0 has no context, so it is never scored
    logit_scale, softcap = logit_transform(model.config)
    logps = sequence_logps_from_hidden(
        hidden[:, :-1],  # [B, T-1, H]
        head.weight,
        input_ids[:, 1:],  # [B, T-1]
        scored,
        head.bias,
        logit_scale=logit_scale,
        softcap=softcap,
        vocab_chunk=vocab_chunk,
    )
    return CompletionLogps(logps=logps, lengths=scored.sum(dim=1))


def add_sequence_logps_head(model: PreTrainedModel, *, vocab_chunk: int | None = None) -> bool:
    """Patch `model.forward`: with `completion_mask=` it returns `CompletionLogps`, else it is unchanged.

    Returns True when this call added the patch (False when it was already there). Generation
    and ordinary forwards keep working, as with TRL's `add_fused_lm_head`.
    """
    if getattr(model, _HEAD_MARKER, False):
        return False
    original_forward = model.forward

    @functools.wraps(type(model).forward)
    def forward(self, *args, completion_mask: Tensor | None = None, **kwargs):
        if completion_mask is None:
            return original_forward(*args, **kwargs)
        if args:
            raise TypeError("pass input_ids and attention_mask by keyword together with completion_mask")
        return completion_logps(
            self, kwargs["input_ids"], kwargs["attention_mask"], completion_mask, vocab_chunk=vocab_chunk
        )

    model.forward = types.MethodType(forward, model)
    setattr(model, _HEAD_MARKER, True)
    return True


def restore_forward(model: PreTrainedModel) -> None:
    """Undo every instance-level forward patch (ours, TRL's, accelerate's): back to the class forward."""
    vars(model).pop("forward", None)
    vars(model).pop(_HEAD_MARKER, None)


@contextmanager
def sequence_logps_head(model: PreTrainedModel, *, vocab_chunk: int | None = None) -> Iterator[None]:
    """`add_sequence_logps_head` for the duration of a block; the previous forward comes back afterwards."""
    previous = vars(model).get("forward")
    added = add_sequence_logps_head(model, vocab_chunk=vocab_chunk)
    try:
        yield
    finally:
        if added:
            restore_forward(model)
            if previous is not None:
                model.forward = previous
