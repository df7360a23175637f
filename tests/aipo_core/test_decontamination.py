"""Decontamination against the real bundled benchmarks: the bundled pools are clean, copies and
near-paraphrases of benchmark prompts are caught, earlier iterations' instructions too."""

import pytest

from aipo_core.data import BENCHMARKS, BUNDLED_POOLS, load_benchmark, load_prompt_pool
from aipo_core.decontamination import (
    REASONS,
    Decontaminator,
    PromptIndex,
    benchmark_index,
    benchmark_prompts,
    normalize,
    user_turns,
)
from aipo_core.rouge import RougeDeduplicator

ALPACA = load_benchmark("alpaca_eval")
MT_BENCH = load_benchmark("mt_bench")
ARENA = load_benchmark("arena_hard")


def test_normalize_ignores_case_whitespace_punctuation_and_unicode_forms():
    assert normalize("  What is  the CAPITAL of France?\n") == "what is the capital of france"
    assert normalize("Ｑ＆Ａ: ﬁne…") == normalize("q & a fine")
    assert normalize("") == ""


def test_benchmark_index_holds_every_turn_of_every_benchmark():
    prompts = benchmark_prompts()
    assert len(prompts) == 805 + 2 * 80 + 500
    assert benchmark_index() is benchmark_index()  # built once per process
    assert len(benchmark_index()) == len(prompts)
    assert set(BENCHMARKS) == {"alpaca_eval", "mt_bench", "arena_hard"}


@pytest.mark.parametrize("pool", sorted(BUNDLED_POOLS))
def test_bundled_pools_share_no_prompt_with_any_bundled_benchmark(pool):
    """Both criteria, and for prompts with an input also the instruction part alone."""
    prompts = load_prompt_pool(pool)
    exact = {normalize(p) for p in benchmark_prompts()}
    similar = RougeDeduplicator(benchmark_prompts(), 0.7, inclusive=True)
    heads = [p.split("\n\n", 1)[0] for p in prompts]
    assert [p for p in prompts + heads if normalize(p) in exact] == []
    assert [p for p in prompts + heads if similar.is_duplicate(p)] == []


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (ALPACA[500].instruction, "benchmark_exact"),  # a selfinstruct item the old pool contained
        ("  " + ALPACA[3].instruction.upper().replace(" ", "   ") + " ", "benchmark_exact"),
        (MT_BENCH[0].turns[1], "benchmark_exact"),  # second turns count too
        (ARENA[7].instruction, "benchmark_exact"),
        ("Write me a " + ALPACA[10].instruction.rstrip("?.!") + ", please.", "benchmark_similar"),
        ("Write a limerick about a cat who loves lasagna.", None),
    ],
)
def test_benchmark_copies_and_near_paraphrases_are_caught(text, reason):
    assert Decontaminator().reason(text) == reason


def test_near_paraphrase_threshold_is_rouge_l_0_7_inclusive():
    words = "one two three four five six seven eight nine ten".split()
    index = PromptIndex([" ".join(words)])
    assert index.match(" ".join(words[:7] + ["x", "y", "z"])) == "similar"  # F1 = 0.7
    assert index.match(" ".join(words[:6] + ["x", "y", "z", "w"])) is None  # F1 = 0.6


def test_earlier_iterations_instructions_are_rejected_exactly_and_nearly():
    earlier = ["Name three rivers in Europe and their lengths.", "Suggest a title for a story."]
    decontaminator = Decontaminator(earlier)
    assert decontaminator.reason("name three rivers in europe, and their lengths!") == "earlier_iteration"
    assert decontaminator.reason("Name three rivers in Europe and their length.") == "earlier_iteration"
    assert decontaminator.reason("Explain how tides work.") is None
    # Benchmarks are checked first.
    assert Decontaminator([ALPACA[0].instruction]).reason(ALPACA[0].instruction) == "benchmark_exact"


def test_clean_prompts_drops_benchmark_prompts_only_and_counts_them():
    earlier = "Explain how tides work."
    pool = ["Give three tips for staying healthy.", ALPACA[600].instruction, MT_BENCH[5].turns[1], earlier]
    kept, counts = Decontaminator([earlier]).clean_prompts(pool)
    assert kept == [pool[0], earlier]  # an earlier instruction stays a valid few-shot example
    assert counts == {"benchmark_exact": 2, "benchmark_similar": 0, "earlier_iteration": 0}
    assert tuple(counts) == REASONS


def test_clean_pairs_checks_every_user_turn_of_the_prompt():
    def pair(prompt):
        return {"id": str(len(prompt)), "prompt": prompt, "chosen": [], "rejected": []}

    clean = pair([{"role": "user", "content": "Name a colour."}])
    copied = pair([{"role": "user", "content": ARENA[0].instruction}])
    second_turn = pair(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": MT_BENCH[1].turns[0]},
            {"role": "assistant", "content": "Sure."},
            {"role": "user", "content": MT_BENCH[1].turns[1] + " Thanks!"},
        ]
    )
    kept, counts = Decontaminator().clean_pairs([clean, copied, second_turn])
    assert kept == [clean]
    assert counts == {"benchmark_exact": 2, "benchmark_similar": 0, "earlier_iteration": 0}


def test_user_turns():
    assert user_turns("Hi") == ["Hi"]
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    assert user_turns(messages) == ["u"]
