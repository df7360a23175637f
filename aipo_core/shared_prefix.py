"""Next-token logits of many token sequences, each shared prefix run through the model once.

An LLM judge asks the same question about many texts that start alike: every comparison of a
prompt's round robin shows the same instruction, and every pair in which candidate j is Response A
shares the text up to the end of candidate j. `last_token_logits` takes the sequences in groups;
a group's longest common token prefix is run once, its KV cache is copied to each row of the group
(`DynamicCache.batch_select_indices`), and only each row's own remainder is run on top of it.

The sequences are tokenized whole beforehand and the prefix is cut in token space, so the model
sees exactly the tokens a separate forward of each sequence would see; the logits agree with it up
to floating-point rounding (tests/aipo_core/test_shared_prefix.py).

Groups are packed into batches longest first, so a batch holds sequences of similar length and
left padding wastes little. A model whose forward takes no `past_key_values` gets one plain forward per
batch of whole sequences (no sharing).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel


@dataclass(frozen=True)
class _Group:
    """Rows that share `shared` leading tokens (at least one token of each row stays its own)."""

    rows: tuple[int, ...]
    shared: int


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """The number of leading tokens all `sequences` have in common."""
    shortest = min(len(s) for s in sequences)
    for i in range(shortest):
        token = sequences[0][i]
        if any(s[i] != token for s in sequences):
            return i
    return shortest


def _groups(sequences: Sequence[Sequence[int]], groups: Sequence[Sequence[int]], share: bool) -> list[_Group]:
    out = []
    for rows in groups:
        members = [sequences[r] for r in rows]
        # The last token of each row is always the row's own: its logits are the answer.
        shared = min(common_prefix_length(members), min(len(m) for m in members) - 1) if share else 0
        out.append(_Group(tuple(rows), shared))
    return out


def _batches(groups: list[_Group], sequences: Sequence[Sequence[int]], max_rows: int) -> list[list[_Group]]:
    """Longest groups first, packed greedily into batches of at most `max_rows` rows; a larger group
    is split into several groups with the same shared prefix."""
    pieces = [
        _Group(g.rows[i : i + max_rows], g.shared) for g in groups for i in range(0, len(g.rows), max_rows)
    ]
    pieces.sort(key=lambda g: max(len(sequences[r]) for r in g.rows), reverse=True)
    batches: list[list[_Group]] = []
    rows = 0
    for piece in pieces:
        if not batches or rows + len(piece.rows) > max_rows:
            batches.append([])
            rows = 0
        batches[-1].append(piece)
        rows += len(piece.rows)
    return batches


def _left_padded(
    sequences: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """ids and attention mask, both [len(sequences), longest], real tokens flush right."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        if s:
            ids[i, width - len(s) :] = torch.tensor(list(s), dtype=torch.long)
            mask[i, width - len(s) :] = 1
    return ids.to(device), mask.to(device)


def _takes(model: PreTrainedModel, name: str) -> bool:
    return name in inspect.signature(model.forward).parameters


def _batch_logits(
    model: PreTrainedModel, sequences: Sequence[Sequence[int]], batch: list[_Group], pad_id: int
) -> torch.Tensor:
    """Last-token logits [rows of the batch, V] of the batch's rows, in group order."""
    device = model.device
    last_only = {"logits_to_keep": 1} if _takes(model, "logits_to_keep") else {}
    owner = [g for g, group in enumerate(batch) for _ in group.rows]
    suffixes = [sequences[r][group.shared :] for group in batch for r in group.rows]
    suffix_ids, suffix_mask = _left_padded(suffixes, pad_id, device)  # [R, Ls]
    if all(group.shared == 0 for group in batch):
        positions = (suffix_mask.cumsum(-1) - 1).clamp(min=0)  # [R, Ls]: real-token positions
        out = model(input_ids=suffix_ids, attention_mask=suffix_mask, position_ids=positions, **last_only)
        return out.logits[:, -1, :]
    prefixes = [sequences[group.rows[0]][: group.shared] for group in batch]
    prefix_ids, prefix_mask = _left_padded(prefixes, pad_id, device)  # [G, Lp]
    cache = DynamicCache(config=model.config)
    model(
        input_ids=prefix_ids,
        attention_mask=prefix_mask,
        position_ids=(prefix_mask.cumsum(-1) - 1).clamp(min=0),  # [G, Lp]
        past_key_values=cache,
        use_cache=True,
        **last_only,
    )
    index = torch.tensor(owner, device=device)  # [R]: the group of each row
    cache.batch_select_indices(index)  # [G, heads, Lp, dim] -> [R, heads, Lp, dim] per layer
    mask = torch.cat([prefix_mask[index], suffix_mask], dim=1)  # [R, Lp + Ls]
    # A row's remainder continues from its prefix's real length, whatever the padding.
    positions = prefix_mask.sum(-1)[index, None] + (suffix_mask.cumsum(-1) - 1).clamp(min=0)  # [R, Ls]
    out = model(
        input_ids=suffix_ids,
        attention_mask=mask,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
        **last_only,
    )
    return out.logits[:, -1, :]


def forward_tokens(
    sequences: Sequence[Sequence[int]], groups: Sequence[Sequence[int]], *, max_rows: int, share: bool = True
) -> int:
    """Token positions `last_token_logits` runs through the model, padding included: its work,
    in a unit that does not depend on the machine or its load (bench/judge.py)."""
    total = 0
    for batch in _batches(_groups(sequences, groups, share), sequences, max(1, max_rows)):
        rows = sum(len(group.rows) for group in batch)
        total += len(batch) * max(group.shared for group in batch)
        total += rows * max(len(sequences[r]) - group.shared for group in batch for r in group.rows)
    return total


def last_token_logits(
    model: PreTrainedModel,
    sequences: Sequence[Sequence[int]],
    groups: Sequence[Sequence[int]],
    *,
    pad_id: int,
    max_rows: int,
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Yields (row indices, their last-token logits [len(rows), V]) batch by batch, every row once.

    `groups` partitions range(len(sequences)); rows of a group share their common token prefix
    (a group of one shares nothing with others, so it runs as one row). Call under
    `aipo_core.models.inference`. At most `max_rows` rows run per forward.
    """
    if sorted(r for rows in groups for r in rows) != list(range(len(sequences))):
        raise ValueError("groups must partition the sequence indices")
    if any(len(s) == 0 for s in sequences):
        raise ValueError("every sequence needs at least one token")
    share = _takes(model, "past_key_values") and not model.config.is_encoder_decoder
    for batch in _batches(_groups(sequences, groups, share), sequences, max(1, max_rows)):
        logits = _batch_logits(model, sequences, batch, pad_id)  # [R, V]
        yield [r for group in batch for r in group.rows], logits
