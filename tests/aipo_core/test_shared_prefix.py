"""Shared-prefix forwards give the logits of separate, unpadded forwards (tiny random Llama)."""

import functools

import pytest
import torch

from aipo_core.models import inference, load_model_and_tokenizer
from aipo_core.shared_prefix import common_prefix_length, forward_tokens, last_token_logits


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_model_and_tokenizer("tiny-random-llama", cache_dir=tmp_path_factory.mktemp("models"))


def _alone(model, ids: list[int]) -> torch.Tensor:
    with inference(model):
        return model(input_ids=torch.tensor([ids])).logits[0, -1]  # [V]


def _texts(tokenizer, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def test_common_prefix_length():
    assert common_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert common_prefix_length([[5, 6], [5, 6]]) == 2
    assert common_prefix_length([[1], [2]]) == 0


def test_grouped_rows_match_separate_forwards(tiny):
    model, tokenizer = tiny
    head = "Compare the two answers to the question about the capital of France. Response A: "
    sequences = _texts(
        tokenizer,
        [
            head + "Paris. Response B: Lyon.",
            head + "Paris. Response B: The capital of France is Paris, a large city.",
            head + "Paris. Response B: No.",
            "Which fruit is rich in vitamin C? Response A: oranges",  # a group of one
            "Short.",
            head + "Lyon. Response B: Paris.",
            head + "Lyon. Response B: Marseille is the capital, says the second answer.",
        ],
    )
    groups = [[0, 1, 2], [3], [4], [5, 6]]
    seen = {}
    with inference(model):
        # max_rows=2 splits the group of three and mixes groups of different lengths in a batch.
        for rows, logits in last_token_logits(
            model, sequences, groups, pad_id=tokenizer.pad_token_id, max_rows=2
        ):
            assert logits.shape == (len(rows), model.config.vocab_size)
            seen |= dict(zip(rows, logits, strict=True))
    assert sorted(seen) == list(range(len(sequences)))
    for row, ids in enumerate(sequences):
        torch.testing.assert_close(seen[row], _alone(model, ids), atol=1e-4, rtol=1e-4)


def test_a_model_without_a_cache_argument_runs_whole_sequences(tiny):
    model, tokenizer = tiny

    class NoCache(torch.nn.Module):
        """The tiny model behind a forward that takes no cache (as some remote-code models)."""

        def __init__(self):
            super().__init__()
            self.inner, self.config = model, model.config

        @property
        def device(self):
            return self.inner.device

        def forward(self, input_ids, attention_mask, position_ids):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)

    sequences = _texts(tokenizer, ["Answer A or B.", "Answer A or B, please, now."])
    wrapped = NoCache()
    with inference(wrapped):
        out = dict(
            pair
            for rows, logits in last_token_logits(wrapped, sequences, [[0, 1]], pad_id=0, max_rows=4)
            for pair in zip(rows, logits, strict=True)
        )
    for row, ids in enumerate(sequences):
        torch.testing.assert_close(out[row], _alone(model, ids), atol=1e-4, rtol=1e-4)


def test_groups_must_cover_every_row_once(tiny):
    model, tokenizer = tiny
    sequences = _texts(tokenizer, ["a b", "c d"])
    with pytest.raises(ValueError, match="partition"):
        list(last_token_logits(model, sequences, [[0]], pad_id=0, max_rows=2))
    with pytest.raises(ValueError, match="partition"):
        list(last_token_logits(model, sequences, [[0, 1], [1]], pad_id=0, max_rows=2))


def test_forward_tokens_counts_each_shared_prefix_once_and_the_padding():
    sequences = [[1, 2, 3, 4], [1, 2, 3, 5, 6], [7, 8]]
    # One batch: prefixes [1, 2, 3] and [7] padded to 3 (2 rows), remainders padded to 2 (3 rows).
    assert forward_tokens(sequences, [[0, 1], [2]], max_rows=4) == 2 * 3 + 3 * 2
    # Without sharing: one forward of the whole rows, padded to the longest (5).
    assert forward_tokens(sequences, [[0, 1], [2]], max_rows=4, share=False) == 3 * 5


def test_a_real_model_runs_exactly_the_counted_tokens(tiny, monkeypatch):
    """The sharing really happens on a transformers model: the token positions its forward sees
    are forward_tokens(share=True), fewer than a whole-row forward. (The model's cache argument is
    `past_key_values`; asking for one named `cache` once silently turned the sharing off, and the
    logits test above cannot tell — a whole-row forward gives the same logits.)"""
    model, tokenizer = tiny
    head = "Compare the two answers to the question about the capital of France, Response A: "
    sequences = _texts(tokenizer, [head + "Paris. B: Lyon.", head + "Paris. B: Nice.", head + "Lyon."])
    groups = [[0, 1], [2]]
    seen: list[int] = []
    forward = type(model).forward

    @functools.wraps(forward)  # keeps the signature the code inspects
    def counting(self, input_ids=None, **kwargs):
        seen.append(input_ids.numel())
        return forward(self, input_ids=input_ids, **kwargs)

    monkeypatch.setattr(type(model), "forward", counting)
    with inference(model):
        list(last_token_logits(model, sequences, groups, pad_id=tokenizer.pad_token_id, max_rows=4))
    assert sum(seen) == forward_tokens(sequences, groups, max_rows=4)
    assert sum(seen) < forward_tokens(sequences, groups, max_rows=4, share=False)
