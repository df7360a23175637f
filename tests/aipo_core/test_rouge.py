"""ROUGE-L near-duplicate detection: rouge-score's scores, strict and inclusive thresholds, and the
inverted-index shortcut agreeing with brute force."""

import random

import pytest
from rouge_score import rouge_scorer

from aipo_core.data import load_benchmark, load_prompt_pool
from aipo_core.rouge import RougeDeduplicator


def test_rouge_scores_match_rouge_score_package():
    references = ["Give three tips for staying healthy.", "Write a short poem about the sea."]
    dedup = RougeDeduplicator(references, threshold=0.7)
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    for text in [
        "Give 3 tips for staying healthy!",
        "Write a poem about the ocean.",
        "Unrelated words here.",
    ]:
        expected = max(scorer.score(ref, text)["rougeL"].fmeasure for ref in references)
        assert dedup.max_score(text) == pytest.approx(expected)


def test_threshold_is_strict():
    reference = "one two three four five six seven eight nine ten"
    dedup = RougeDeduplicator([reference], threshold=0.7)
    exactly_point_seven = "one two three four five six seven x y z"  # LCS 7 of 10 and 10 -> F = 0.7
    assert dedup.max_score(exactly_point_seven) == pytest.approx(0.7)
    assert not dedup.is_duplicate(exactly_point_seven)
    assert dedup.is_duplicate("one two three four five six seven eight x y")


def test_is_duplicate_agrees_with_exact_scores_on_the_bundled_pool():
    pool = load_prompt_pool("self_instruct_seeds")
    dedup = RougeDeduplicator(pool, threshold=0.7)
    candidates = [
        pool[0],
        pool[10][: len(pool[10]) * 3 // 4],
        " ".join(reversed(pool[20].split())),
        "Write a limerick about a cat who loves lasagna.",
        "Explain the rules of chess to a child.",
        "",
    ]
    for text in candidates:
        assert dedup.is_duplicate(text) == (dedup.max_score(text) > 0.7), text
    assert dedup.is_duplicate(pool[0])


def test_deduplicator_grows():
    dedup = RougeDeduplicator([], threshold=0.7)
    assert len(dedup) == 0 and not dedup.is_duplicate("Name three rivers in Europe.")
    dedup.add("Name three rivers in Europe.")
    assert len(dedup) == 1 and dedup.is_duplicate("Name three rivers in Europe!")


def test_inclusive_threshold_counts_a_score_equal_to_it():
    reference = "one two three four five six seven eight nine ten"
    dedup = RougeDeduplicator([reference], threshold=0.7, inclusive=True)
    assert dedup.is_duplicate("one two three four five six seven x y z")  # F = 0.7 exactly
    assert not dedup.is_duplicate("one two three four five six x y z w")  # F = 0.6


def test_index_stays_correct_while_references_are_added_between_queries():
    dedup = RougeDeduplicator([], threshold=0.7)
    texts = ["Name three rivers in Europe.", "Write a haiku about the sea.", "Name three lakes in Asia."]
    for text in texts:
        dedup.add(text)
        assert dedup.is_duplicate(text)
    assert dedup.is_duplicate("Write a haiku about the sea!")
    assert not dedup.is_duplicate("Explain how tides work.")


@pytest.mark.parametrize("inclusive", [False, True])
def test_is_duplicate_equals_brute_force_rouge_score_on_benchmark_prompts(inclusive):
    """Against every MT-Bench turn: texts built to land around the threshold (prefixes, word drops,
    shuffles) get the verdict rouge-score's own scorer gives, reference by reference."""
    references = [turn for item in load_benchmark("mt_bench") for turn in item.turns]
    dedup = RougeDeduplicator(references, threshold=0.7, inclusive=inclusive)
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    rng = random.Random(0)
    texts = []
    for reference in rng.sample(references, 40):
        words = reference.split()
        texts.append(" ".join(words[: max(1, len(words) * rng.randint(5, 9) // 10)]))
        texts.append(" ".join(w for w in words if rng.random() > 0.3))
        texts.append(" ".join(rng.sample(words, len(words))))
    for text in texts:
        best = max(scorer.score(ref, text)["rougeL"].fmeasure for ref in references)
        expected = best >= 0.7 - 1e-9 if inclusive else best > 0.7
        assert dedup.is_duplicate(text) == expected, text
    assert any(dedup.is_duplicate(t) for t in texts) and not all(dedup.is_duplicate(t) for t in texts)
