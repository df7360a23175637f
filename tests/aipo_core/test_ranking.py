"""Rankers (PairRM via llm-blender, reward model, LLM judge), ranking and pair selection."""

import math

import pytest
import torch

from aipo_core.access import AccessError, ModelAccess
from aipo_core.config import GenerationConfig, LengthBiasConfig
from aipo_core.generation import generate_candidates, make_generator
from aipo_core.models import load_model_and_tokenizer
from aipo_core.pairrm_compat import apply_pairrm_compat, import_llm_blender
from aipo_core.ranking import (
    DROP_REASONS,
    LengthBiasedRanker,
    LLMJudgeRanker,
    PairRMRanker,
    RewardModelRanker,
    contains_url,
    exclude_unfinished,
    filter_by_training_length,
    length_violation,
    make_ranker,
    rank_candidates,
    select_pairs,
    select_pairs_with_outcomes,
    training_lengths,
)
from aipo_core.training import tokenize_pair
from tests.aipo_core.checkpoints import build_tiny_pairrm, tiny_deberta_config, tiny_wordpiece_tokenizer

PROMPT = "Name a fruit that is rich in vitamin C."
CANDIDATES = ["An orange.", "Oranges and kiwis are rich in vitamin C.", "I like cars.", "Lemon"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_model_and_tokenizer("tiny-random-llama", cache_dir=tmp_path_factory.mktemp("models"))


# --------------------------------------------------------------------------- PairRM (tiny, offline)


@pytest.fixture(scope="module")
def pairrm_access(tmp_path_factory):
    """A data root holding the tiny PairRM checkpoint and its backbone."""
    root = tmp_path_factory.mktemp("pairrm")
    return root, ModelAccess(data_roots=(root.resolve(),))


@pytest.fixture(scope="module")
def tiny_pairrm(pairrm_access):
    root, access = pairrm_access
    return PairRMRanker(str(build_tiny_pairrm(root)), access=access, batch_size=2, device="cpu")


def test_pairrm_compat_is_idempotent_and_makes_llm_blender_importable():
    from transformers import PreTrainedTokenizerBase
    from transformers.utils import hub

    apply_pairrm_compat()
    shims = (hub.TRANSFORMERS_CACHE, PreTrainedTokenizerBase.batch_encode_plus)
    apply_pairrm_compat()
    assert (hub.TRANSFORMERS_CACHE, PreTrainedTokenizerBase.batch_encode_plus) == shims
    assert hasattr(import_llm_blender(), "Blender")


def test_pairrm_scores_are_antisymmetric_in_candidate_order(tiny_pairrm):
    scores = tiny_pairrm.score(PROMPT, CANDIDATES)
    assert len(scores) == len(CANDIDATES) and len(set(scores)) == len(CANDIDATES)
    assert sum(scores) == pytest.approx(0.0, abs=1e-6)  # mean_j(l[i,j] - l[j,i]) sums to zero
    reversed_scores = tiny_pairrm.score(PROMPT, CANDIDATES[::-1])
    assert reversed_scores[::-1] == pytest.approx(scores, abs=1e-6)


def test_pairrm_batches_prompts_with_different_candidate_counts(tiny_pairrm):
    other = "Say hello."
    batched = tiny_pairrm.score_batch([PROMPT, other, PROMPT], [CANDIDATES, ["hello", "bye"], CANDIDATES[:3]])
    assert [len(row) for row in batched] == [4, 2, 3]
    assert batched[0] == pytest.approx(tiny_pairrm.score(PROMPT, CANDIDATES), abs=1e-6)
    assert batched[1] == pytest.approx(tiny_pairrm.score(other, ["hello", "bye"]), abs=1e-6)


def test_pairrm_pairwise_preference_is_complementary_and_agrees_with_scores(tiny_pairrm):
    a, b = CANDIDATES[0], CANDIDATES[2]
    p_ab, p_ba = tiny_pairrm.pairwise_preferences([PROMPT, PROMPT], [a, b], [b, a])
    assert 0.0 < p_ab < 1.0 and p_ab + p_ba == pytest.approx(1.0, abs=1e-6)
    score_a, score_b = tiny_pairrm.score(PROMPT, [a, b])
    assert (p_ab > 0.5) == (score_a > score_b)


def test_make_ranker_pairrm_accepts_a_local_folder_and_names_a_bad_one(tiny_pairrm, pairrm_access):
    root, access = pairrm_access
    folder = tiny_pairrm.blender.ranker_config.load_checkpoint
    assert isinstance(make_ranker("pairrm", folder, access=access, batch_size=1, device="cpu"), PairRMRanker)
    (root / "empty").mkdir()
    with pytest.raises(AccessError, match="ranker.model: .*empty has no readable config.json"):
        make_ranker("pairrm", str(root / "empty"), access=access, device="cpu")
    with pytest.raises(AccessError, match="ranker.model: local path .* outside the allowed data roots"):
        make_ranker("pairrm", folder, device="cpu")  # the default policy reads no local path


# --------------------------------------------------------------------------- reward model


@pytest.fixture(scope="module")
def chat_reward_model(tiny, tmp_path_factory):
    """A tiny Llama sequence classifier sharing the tiny chat tokenizer, saved like a hub RM."""
    from transformers import LlamaForSequenceClassification

    model, tokenizer = tiny
    config = model.config.to_dict() | {"num_labels": 1, "pad_token_id": tokenizer.pad_token_id}
    torch.manual_seed(0)
    classifier = LlamaForSequenceClassification(type(model.config).from_dict(config))
    folder = tmp_path_factory.mktemp("rm")
    classifier.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    access = ModelAccess(data_roots=(folder.resolve(),))
    return make_ranker("reward_model", str(folder), access=access, batch_size=3, device="cpu")


def _unbatched_reward(ranker, prompt, response):
    text = ranker.tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}], tokenize=False
    )
    ids = ranker.tokenizer(text, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        return ranker.model(**ids).logits[0, 0].item()


def test_reward_model_score_is_the_logit_of_the_chat_formatted_pair(chat_reward_model):
    scores = chat_reward_model.score(PROMPT, CANDIDATES)  # batch of 3 + 1: padded rows
    expected = [_unbatched_reward(chat_reward_model, PROMPT, c) for c in CANDIDATES]
    assert scores == pytest.approx(expected, abs=1e-4)
    assert len(set(scores)) == len(scores)


def test_reward_model_preference_is_bradley_terry(chat_reward_model):
    a, b = CANDIDATES[1], CANDIDATES[2]
    ra, rb = chat_reward_model.score(PROMPT, [a, b])
    p_ab = chat_reward_model.pairwise_preference(PROMPT, a, b)
    assert p_ab == pytest.approx(1 / (1 + math.exp(rb - ra)), abs=1e-5)
    assert p_ab + chat_reward_model.pairwise_preference(PROMPT, b, a) == pytest.approx(1.0, abs=1e-5)


def test_text_pair_reward_model_without_chat_template(tmp_path):
    from transformers import DebertaV2ForSequenceClassification

    tokenizer = tiny_wordpiece_tokenizer(tmp_path)
    torch.manual_seed(0)
    DebertaV2ForSequenceClassification(tiny_deberta_config(tokenizer, num_labels=1)).save_pretrained(tmp_path)
    access = ModelAccess(data_roots=(tmp_path.resolve(),))
    ranker = make_ranker("reward_model", str(tmp_path), access=access, batch_size=2, device="cpu")
    assert ranker.tokenizer.chat_template is None
    single = [ranker.rewards([PROMPT], [c])[0] for c in CANDIDATES]
    assert ranker.score(PROMPT, CANDIDATES) == pytest.approx(single, abs=1e-4)


def test_reward_model_rejects_policy_and_multi_label_models(tiny):
    from transformers import LlamaForSequenceClassification

    with pytest.raises(ValueError, match="ranker.model"):
        make_ranker("reward_model", "policy")
    model, tokenizer = tiny
    two_labels = LlamaForSequenceClassification(
        type(model.config).from_dict(model.config.to_dict() | {"num_labels": 2})
    )
    with pytest.raises(ValueError, match="num_labels=2"):
        RewardModelRanker(two_labels, tokenizer)


# --------------------------------------------------------------------------- LLM judge


@pytest.fixture(scope="module")
def judge(tiny):
    return make_ranker("llm_judge", "policy", policy=tiny, batch_size=3)


def test_llm_judge_swapping_outputs_gives_the_complementary_preference(judge):
    a, b = CANDIDATES[0], CANDIDATES[2]
    p_ab, p_ba = judge.pairwise_preference(PROMPT, a, b), judge.pairwise_preference(PROMPT, b, a)
    assert 0.0 < p_ab < 1.0 and p_ab != pytest.approx(0.5, abs=1e-6)
    assert p_ab + p_ba == pytest.approx(1.0, abs=1e-5)
    assert judge.pairwise_preference(PROMPT, a, a) == pytest.approx(0.5, abs=1e-5)


def test_llm_judge_single_order_probability_matches_an_unpadded_forward(judge):
    short, long_ = "Yes.", "Oranges, lemons and kiwis are all rich in vitamin C, as are strawberries."
    batched = judge.prob_first_better([PROMPT, PROMPT], [short, long_], [long_, short])  # padded batch
    for (first, second), prob in zip([(short, long_), (long_, short)], batched, strict=True):
        text = judge.tokenizer.apply_chat_template(
            [
                {
                    "role": "user",
                    "content": judge.template.format(instruction=PROMPT, response_a=first, response_b=second),
                }
            ],
            add_generation_prompt=True,
            tokenize=False,
        )
        ids = judge.tokenizer(text, add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
            logprobs = torch.log_softmax(judge.model(**ids).logits[0, -1].float(), dim=-1)
        la = torch.logsumexp(logprobs[judge._label_ids[0]], dim=0)
        lb = torch.logsumexp(logprobs[judge._label_ids[1]], dim=0)
        assert prob == pytest.approx(torch.sigmoid(la - lb).item(), abs=1e-5)


def test_llm_judge_round_robin_scores(judge):
    scores = judge.score(PROMPT, CANDIDATES[:3])
    assert sum(scores) == pytest.approx(3 / 2, abs=1e-5)  # each pair hands out exactly one point
    p01 = judge.pairwise_preference(PROMPT, CANDIDATES[0], CANDIDATES[1])
    p02 = judge.pairwise_preference(PROMPT, CANDIDATES[0], CANDIDATES[2])
    assert scores[0] == pytest.approx((p01 + p02) / 2, abs=1e-5)


def test_llm_judge_factory_needs_the_policy_and_keeps_training_mode(tiny):
    with pytest.raises(ValueError, match="policy"):
        make_ranker("llm_judge", "policy")
    with pytest.raises(ValueError, match="ranker.kind"):
        make_ranker("gpt4", "policy", policy=tiny)
    model, tokenizer = tiny
    model.train()
    try:
        LLMJudgeRanker(model, tokenizer).pairwise_preference(PROMPT, "a", "b")
        assert model.training
    finally:
        model.eval()


# --------------------------------------------------------------------------- length-biased

SHORT, LONG = "Lemon.", "Oranges and kiwis are rich in vitamin C."  # 6 and 40 characters


@pytest.fixture(scope="module")
def blind_judge(tiny):
    """A real LLM judge whose prompt omits the responses: it cannot tell two apart, so every pair
    is an exact tie (both orders ask the same question, ½·(q + 1 − q) = ½)."""
    model, tokenizer = tiny
    return LLMJudgeRanker(model, tokenizer, template="Instruction: {instruction}\nAnswer A or B.")


def test_length_biased_tie_goes_to_the_longer_candidate_by_exactly_the_bonus(blind_judge):
    assert blind_judge.score(PROMPT, [SHORT, LONG]) == pytest.approx([0.5, 0.5], abs=1e-6)
    biased = LengthBiasedRanker(blind_judge, 0.05)  # per 100 characters
    short, long_ = biased.score(PROMPT, [SHORT, LONG])
    assert short == pytest.approx(0.5 + 0.05 * 6 / 100, abs=1e-6)
    assert long_ - short == pytest.approx(0.05 * (40 - 6) / 100, abs=1e-6)
    record = _record("r", [SHORT, LONG], instruction=PROMPT)
    pairs, _ = select_pairs([record], [[short, long_]], tokenizer=blind_judge.tokenizer)
    assert pairs[0]["chosen"][0]["content"] == LONG


def test_length_biased_per_token_counts_the_policy_tokens(blind_judge, tiny):
    _, tokenizer = tiny
    bias = LengthBiasConfig(judge="llm_judge", bonus=0.01, unit="token")
    biased = make_ranker("length_biased", "policy", policy=tiny, length_bias=bias)
    assert isinstance(biased, LengthBiasedRanker) and isinstance(biased.judge, LLMJudgeRanker)
    biased.judge = blind_judge
    gap = len(tokenizer.encode(LONG, add_special_tokens=False)) - len(
        tokenizer.encode(SHORT, add_special_tokens=False)
    )
    short, long_ = biased.score(PROMPT, [SHORT, LONG])
    assert long_ - short == pytest.approx(0.01 * gap, abs=1e-6) and gap > 0
    # Pairwise: the tie (logit 0) moved by the bonus gap on the logit scale.
    assert biased.pairwise_preference(PROMPT, LONG, SHORT) == pytest.approx(1 / (1 + math.exp(-0.01 * gap)))


def test_length_biased_factory_needs_its_bias():
    with pytest.raises(ValueError, match="ranker.length_bias"):
        make_ranker("length_biased", "policy")
    with pytest.raises(ValueError, match="policy tokenizer"):
        make_ranker("length_biased", "m", length_bias=LengthBiasConfig(bonus=0.1, unit="token"))


def test_rank_candidates_scores_every_record_and_reports_progress(judge):
    records = [
        {
            "id": f"r{i}",
            "instruction": PROMPT,
            "prompt": [{"role": "user", "content": PROMPT}],
            "candidates": cands,
        }
        for i, cands in enumerate([CANDIDATES[:2], CANDIDATES[1:4], CANDIDATES[:2], CANDIDATES[2:]])
    ]
    events = []
    scores = rank_candidates(records, judge, sink=events.append)
    assert [len(row) for row in scores] == [2, 3, 2, 2]
    assert scores[0] == pytest.approx(scores[2], abs=1e-5)
    assert scores[1] == pytest.approx(judge.score(PROMPT, CANDIDATES[1:4]), abs=1e-5)
    fractions = [e["fraction"] for e in events if e["kind"] == "progress"]
    assert fractions == pytest.approx([0.75, 1.0])
    assert any(e["kind"] == "metric" and "rank/score_spread_mean" in e["values"] for e in events)


# --------------------------------------------------------------------------- pair selection


def _record(rid, candidates, instruction="Name a fruit.", finished=None):
    return {
        "id": rid,
        "instruction": instruction,
        "prompt": [{"role": "user", "content": instruction}],
        "candidates": candidates,
        "lengths": [len(c.split()) for c in candidates],
        "finished": [True] * len(candidates) if finished is None else finished,
    }


def test_select_pairs_keeps_best_and_worst_with_lengths(tiny):
    _, tokenizer = tiny
    record = _record("a", ["An orange.", "A lemon, sour and bright.", "Cars."])
    pairs, drops = select_pairs([record], [[0.2, 0.9, -1.5]], tokenizer=tokenizer)
    assert sum(drops.values()) == 0 and set(drops) == set(DROP_REASONS)
    (pair,) = pairs
    assert pair["id"] == "a" and pair["prompt"] == record["prompt"]
    assert pair["chosen"] == [{"role": "assistant", "content": "A lemon, sour and bright."}]
    assert pair["rejected"] == [{"role": "assistant", "content": "Cars."}]
    assert (pair["score_chosen"], pair["score_rejected"]) == (0.9, -1.5)
    # Lengths as training tokenizes the pair: the response plus the template's end of turn.
    ids = tokenize_pair(pair, tokenizer, max_prompt_length=512)
    assert (pair["chosen_length"], pair["rejected_length"]) == (
        len(ids["chosen_ids"]),
        len(ids["rejected_ids"]),
    )
    assert pair["rejected_length"] == len(
        tokenizer("Cars.<|im_end|>\n", add_special_tokens=False)["input_ids"]
    )
    assert (pair["chosen_chars"], pair["rejected_chars"]) == (25, 5)
    assert not any(key.startswith("ref_") for key in pair)


def test_select_pairs_counts_each_drop_reason(tiny):
    _, tokenizer = tiny
    long_instruction = "Explain " + "the history of France " * 40
    cases = [
        (_record("few", ["only one"]), [1.0], "too_few_candidates"),
        (_record("tie", ["a", "b", "c"]), [0.5, 0.5, 0.5], "tie"),
        (_record("same", ["Same text.", " Same text. "]), [1.0, 0.0], "identical_texts"),
        (_record("empty", ["  ", "An orange."]), [1.0, 0.0], "empty_chosen"),
        (_record("long_prompt", ["A", "B"], instruction=long_instruction), [1.0, 0.0], "prompt_too_long"),
        (_record("long_resp", ["Fine.", "word " * 80]), [1.0, 0.0], "response_too_long"),
        (_record("url", ["See https://example.com/fruit", "An orange."]), [1.0, 0.0], "url_in_chosen"),
        (_record("ok", ["An orange.", "See www.example.com"]), [1.0, 0.0], None),  # URL only in rejected
    ]
    pairs, drops = select_pairs(
        [c[0] for c in cases],
        [c[1] for c in cases],
        tokenizer=tokenizer,
        max_prompt_tokens=64,
        max_length=64,
    )
    assert [p["id"] for p in pairs] == ["ok"]
    assert drops == {reason: int(any(c[2] == reason for c in cases)) for reason in DROP_REASONS}


def test_select_pairs_without_response_budget_and_near_ties(tiny):
    _, tokenizer = tiny
    records = [_record("long_resp", ["Fine.", "word " * 80]), _record("near_tie", ["a", "b"])]
    pairs, drops = select_pairs(records, [[1.0, 0.0], [0.3, 0.3 + 1e-9]], tokenizer=tokenizer)
    assert [p["id"] for p in pairs] == ["long_resp"]
    assert drops["tie"] == 1


def test_response_too_long_fires_exactly_past_the_training_budget(tiny):
    """The budget is training's: prompt + response (with its end-of-turn) must fit max_length, or
    the collator would cut the response and train on it as if it ended there."""
    _, tokenizer = tiny
    record = _record("r", ["Fine.", "word " * 30])
    pair = {"prompt": record["prompt"], "chosen": [{"role": "assistant", "content": "word " * 30}]}
    pair["rejected"] = [{"role": "assistant", "content": "Fine."}]
    prompt_len, long_len, _ = training_lengths(pair, tokenizer)
    fits = prompt_len + long_len
    for max_length, kept in [(fits, True), (fits - 1, False)]:
        pairs, drops = select_pairs([record], [[1.0, 0.0]], tokenizer=tokenizer, max_length=max_length)
        assert (len(pairs), drops["response_too_long"]) == ((1, 0) if kept else (0, 1))
    # The rule looks at the longer response, chosen or rejected.
    assert length_violation((prompt_len, 3, long_len), 512, fits - 1) == "response_too_long"
    assert length_violation((prompt_len, 3, long_len), prompt_len - 1, None) == "prompt_too_long"


def test_imported_pairs_are_cut_to_what_training_takes_whole(tiny):
    _, tokenizer = tiny

    def pair(prompt, response):
        return {
            "prompt": [{"role": "user", "content": prompt}],
            "chosen": [{"role": "assistant", "content": response}],
            "rejected": [{"role": "assistant", "content": "No."}],
        }

    pairs = [
        pair("Name a fruit.", "An orange."),
        pair("Name a fruit.", "word " * 200),
        pair("word " * 200, "Ok."),
    ]
    kept, drops = filter_by_training_length(pairs, tokenizer, max_prompt_tokens=96, max_length=128)
    assert kept == pairs[:1]
    assert drops == {"prompt_too_long": 1, "response_too_long": 1}


def test_unfinished_candidates_are_excluded_and_counted():
    records = [
        _record("all", ["a", "b", "c"]),
        _record("some", ["a", "b", "c"], finished=[True, False, True]),
        _record("one_left", ["a", "b"], finished=[False, True]),
        _record("none_left", ["a", "b"], finished=[False, False]),
        {k: v for k, v in _record("legacy", ["a", "b"]).items() if k != "finished"},
    ]
    kept, counts = exclude_unfinished(records)
    assert [r["id"] for r in kept] == ["all", "some", "legacy"]
    assert (
        kept[1]["candidates"] == ["a", "c"]
        and kept[1]["lengths"] == [1, 1]
        and kept[1]["finished"] == [True, True]
    )
    assert records[1]["candidates"] == ["a", "b", "c"]  # the input is not modified
    assert counts == {"unfinished": 4, "dropped_unfinished": 2}
    with pytest.raises(ValueError, match="2 finished flags for 3 candidates"):
        exclude_unfinished([_record("bad", ["a", "b", "c"], finished=[True, True])])


def test_candidates_cut_off_by_max_new_tokens_never_become_pairs(tiny):
    """A real generation with a 2-token budget: the candidates that did not reach EOS are gone."""
    config = GenerationConfig(num_candidates=3, max_new_tokens=2, temperature=1.0)
    instructions = [{"id": f"i{k}", "instruction": f"Name a fruit, take {k}."} for k in range(4)]
    records, _ = generate_candidates(instructions, make_generator(config, *tiny), config, seed=0)
    cut_off = sum(not done for r in records for done in r["finished"])
    assert cut_off > 0
    kept, counts = exclude_unfinished(records)
    assert counts["unfinished"] == cut_off
    assert all(all(r["finished"]) and len(r["candidates"]) >= 2 for r in kept)
    assert len(kept) + counts["dropped_unfinished"] == len(records)


def test_outcomes_index_scores_and_choices_like_the_original_candidates(tiny):
    """candidate_scores.jsonl: scores of excluded (unfinished) candidates are None, chosen/rejected
    point into the unfiltered candidate list, and a dropped prompt says why."""
    _, tokenizer = tiny
    records = [
        _record("some", ["An orange.", "cut off", "Cars."], finished=[True, False, True]),
        _record("tie", ["a", "b"]),
    ]
    kept, _ = exclude_unfinished(records)
    pairs, _, outcomes = select_pairs_with_outcomes(kept, [[0.9, -1.0], [0.5, 0.5]], tokenizer=tokenizer)
    assert [p["id"] for p in pairs] == ["some"]
    assert outcomes[0] == {
        "id": "some", "scores": [0.9, None, -1.0], "chosen": 0, "rejected": 2, "outcome": "pair"
    }  # fmt: skip
    assert outcomes[1]["outcome"] == "tie" and outcomes[1]["scores"] == [0.5, 0.5]


def test_select_pairs_rejects_misshapen_scores(tiny):
    _, tokenizer = tiny
    records = [_record("a", ["x", "y"])]
    with pytest.raises(ValueError, match=r"scores\[0\]: 3 scores for 2 candidates"):
        select_pairs(records, [[1.0, 2.0, 3.0]], tokenizer=tokenizer)
    with pytest.raises(ValueError, match="2 rows for 1 candidate records"):
        select_pairs(records, [[1.0, 2.0], [1.0, 2.0]], tokenizer=tokenizer)
    with pytest.raises(ValueError, match="non-finite"):
        select_pairs(records, [[float("nan"), 2.0]], tokenizer=tokenizer)


@pytest.mark.parametrize(
    ("text", "has_url"),
    [
        ("visit https://example.org now", True),
        ("http://x.y", True),
        ("go to WWW.example.com", True),
        ("the www is old", False),
        ("e.g. this, i.e. that", False),
    ],
)
def test_contains_url(text, has_url):
    assert contains_url(text) is has_url
