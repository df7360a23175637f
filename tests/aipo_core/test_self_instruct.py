"""Self-instruct: prompt format, every cleaning rule, ROUGE-L de-duplication, the generation loop
on the real tiny random Llama, and topping up from the pool."""

import pytest

from aipo_core.config import SelfInstructConfig
from aipo_core.data import load_benchmark
from aipo_core.decontamination import Decontaminator, PromptIndex
from aipo_core.models import load_model_and_tokenizer
from aipo_core.rouge import RougeDeduplicator
from aipo_core.self_instruct import (
    DROP_REASONS,
    capitalize_first,
    clean_response,
    collapse_whitespace,
    cut_at_answer_marker,
    encode_prompt,
    generate_completions,
    generate_instructions,
    is_empty,
    is_too_long,
    is_too_short,
    mentions_blocked_word,
    next_batch_size,
    pool_references,
    rule_violation,
    split_numbered_items,
    starts_with_bad_char,
    starts_with_task_header,
    starts_with_write_a_program,
    stop_strings,
    top_up_from_pool,
    truncate_at_stop,
)

# ---- prompt ----------------------------------------------------------------------------------


def test_encode_prompt_exact_text():
    prompt = encode_prompt(
        ["Give three tips for  staying\nhealthy.", "Classify the sentiment of this review:"]
    )
    assert prompt == (
        "Come up with a series of tasks:\n"
        "1. Give three tips for staying healthy.\n"
        "2. Classify the sentiment of this review\n"
        "3."
    )


def test_encode_prompt_with_eight_examples_ends_at_nine():
    prompt = encode_prompt([f"Task number {i}." for i in range(1, 9)])
    assert prompt.splitlines()[1:3] == ["1. Task number 1.", "2. Task number 2."]
    assert prompt.endswith("\n8. Task number 8.\n9.")


def test_stop_strings_stop_at_the_item_after_the_new_one():
    assert stop_strings(8) == ["\n\n", "\n10.", "\n10 ."]


# ---- text transformations --------------------------------------------------------------------


def test_truncate_at_earliest_stop():
    stops = stop_strings(8)
    assert truncate_at_stop(" Write a haiku.\n10. Next", stops) == " Write a haiku."
    assert truncate_at_stop(" Write a haiku.\n\nAnd more", stops) == " Write a haiku."
    assert truncate_at_stop(" No stop here", stops) == " No stop here"
    assert truncate_at_stop(" What happened in 2010. Name three events.", stops) == (
        " What happened in 2010. Name three events."
    )


def test_split_numbered_items():
    text = " Write a haiku.\n10. Name a color.\n11 . Count to five.\n12.No space is not a new item"
    assert split_numbered_items(text, 10) == [
        " Write a haiku.",
        "Name a color.",
        "Count to five.\n12.No space is not a new item",
    ]
    assert split_numbered_items("Version 2. is out", 10) == ["Version 2. is out"]


@pytest.mark.parametrize(
    "text",
    [
        " Describe what happened in 2010. Name three events.",
        " Explain how to bake bread in 10. steps",
        " Sort these steps:\n1. Mix\n2. Bake\n3. Eat",  # a list inside the instruction
        " Round this number:\n10.5",
        " Name the year:\n2010.",
    ],
)
def test_numbers_inside_an_instruction_do_not_split_it(text):
    assert split_numbered_items(text, 10) == [text]


def test_collapse_whitespace():
    assert collapse_whitespace("  Explain \t the\n\n rules.  ") == "Explain the rules."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("What is 2 + 2? Answer: 4", "What is 2 + 2?"),
        ("Reverse the word. Output: drow", "Reverse the word."),
        ("Solve x + 1 = 2. SOLUTION: x = 1", "Solve x + 1 = 2."),
        ("Q: Is water wet? A: yes", "Q: Is water wet?"),
        ("Write a Q&A: five questions about recycling.", "Write a Q&A: five questions about recycling."),
        ("Draft a Q/A: about refunds for the help page.", "Draft a Q/A: about refunds for the help page."),
        ("Compare plan A: cheap, and plan B: fast.", "Compare plan A: cheap, and plan B: fast."),
        ("Classify the data: cats, dogs.", "Classify the data: cats, dogs."),  # "data:" is not "a:"
        ("Name the output: of a factory.", "Name the"),
        ("Follow the example: Input: 1 Output: 2", "Follow the example: Input: 1 Output: 2"),
        ("Tell me a joke.", "Tell me a joke."),
    ],
)
def test_cut_at_answer_marker(text, expected):
    assert cut_at_answer_marker(text) == expected


def test_capitalize_first_keeps_the_rest():
    assert capitalize_first("explain NASA's role.") == "Explain NASA's role."
    assert capitalize_first("") == ""


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (" write a haiku about autumn leaves.\n10. Next task", "Write a haiku about autumn leaves."),
        ("  Translate this\n sentence into French. Answer: Bonjour", "Translate this sentence into French."),
        (" Summarize the plot of Hamlet.\n11. Another\n12. More", "Summarize the plot of Hamlet."),
        ("\n\nA story", ""),
    ],
)
def test_clean_response_on_hand_written_outputs(raw, expected):
    assert clean_response(raw, 8) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (" list the main events of 2010.\n10. Next task", "List the main events of 2010."),
        (
            " Describe what happened in 2010. Name three events.",
            "Describe what happened in 2010. Name three events.",
        ),
        (
            " Write a Q&A: three questions about the water cycle.",
            "Write a Q&A: three questions about the water cycle.",
        ),
        (" Sort these steps:\n1. Mix\n2. Bake\n10. Next task", "Sort these steps: 1. Mix 2. Bake"),
    ],
)
def test_clean_response_keeps_years_q_and_a_and_inner_lists(raw, expected):
    assert clean_response(raw, 8) == expected


# ---- filters ---------------------------------------------------------------------------------


def test_is_empty():
    assert is_empty("") and is_empty("   ")
    assert not is_empty("x")


def test_task_headers():
    assert starts_with_task_header("Detailed instructions: do the thing well.")
    assert starts_with_task_header("task definition: classify the text.")
    assert not starts_with_task_header("Write detailed instructions: for a recipe.")


def test_length_bounds_use_whitespace_tokens():
    assert is_too_short("Write a poem.")  # 3 tokens
    assert not is_too_short("Write a short poem.")  # 4 tokens
    assert not is_too_long(" ".join(["word"] * 512))
    assert is_too_long(" ".join(["word"] * 513))


@pytest.mark.parametrize(
    "text",
    [
        "Describe the image below.",
        "Summarize these IMAGES for me.",
        "Plot the data points.",
        "Read the file and count lines.",
        "Open the Files app.",
        "Draw a cat.",
        "Which maps are best?",
        "Explain the graph.",
        "Describe the pictures.",
        "How do I go to the station?",
        "Go   to the store.",
    ],
)
def test_blocked_words_drop(text):
    assert mentions_blocked_word(text)


@pytest.mark.parametrize(
    "text",
    [
        "The report was filed late; explain why.",
        "Explain the mapping between keys and values.",
        "Describe what is in the drawer.",
        "Design a graphic for a bakery.",
        "Update my profile summary.",
        "Imagine a world without cars.",
        "Explain the plotline of Hamlet.",
        "Which colors go together well?",
        "Why do people go on holiday?",
    ],
)
def test_blocked_words_match_whole_words_only(text):
    assert not mentions_blocked_word(text)


def test_write_a_program():
    assert starts_with_write_a_program("Write a program that sorts numbers.")
    assert starts_with_write_a_program("write a program to add two numbers.")
    assert not starts_with_write_a_program("Write a poem about programs.")
    assert not starts_with_write_a_program("Explain how to write a program.")


@pytest.mark.parametrize(
    "text", ["- Make a list.", '"Quote this."', ") not a word", "¿Qué hora es?", "中文任务", "\x13bad"]
)
def test_bad_first_char_drops(text):
    assert starts_with_bad_char(text)


@pytest.mark.parametrize("text", ["Make a list.", "3 reasons to exercise.", "a lowercase start"])
def test_bad_first_char_keeps(text):
    assert not starts_with_bad_char(text)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("Detailed instructions: classify each sentence.", "task_header"),
        ("Write poem.", "too_short"),
        ("Word " * 600, "too_long"),
        ("Describe the picture in detail.", "blocked_word"),
        ("Write a program that prints primes.", "write_a_program"),
        ("* Suggest a name for my cat.", "bad_first_char"),
        ("Suggest a name for my new cat.", None),
    ],
)
def test_rule_violation_names_the_rule(text, reason):
    assert rule_violation(text) == reason


# ---- ROUGE-L de-duplication ------------------------------------------------------------------


def test_pool_references_add_the_instruction_part_of_prompts_with_input():
    pool = [
        "Tell a joke.",
        "Summarize the email below.\n\nHi team, the meeting moved to Friday because of the holiday.",
    ]
    assert pool_references(pool) == [*pool, "Summarize the email below."]
    # Against the full prompt the copy scores low; against the instruction part it is caught.
    assert not RougeDeduplicator(pool, 0.7).is_duplicate("Summarize the email below.")
    assert RougeDeduplicator(pool_references(pool), 0.7).is_duplicate("Summarize the email below.")


# ---- generation on the tiny random Llama -----------------------------------------------------

# Short instructions keep the few-shot prompt (and the test) small.
SMALL_POOL = [
    "Give three tips for staying healthy.",
    "Write a short poem about the sea.",
    "Explain how photosynthesis works.",
    "Translate the sentence into Spanish.",
    "List five fruits rich in vitamin C.",
    "Suggest a title for a story about friendship.",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_model_and_tokenizer("tiny-random-llama", cache_dir=tmp_path_factory.mktemp("models"))


def si_config(**overrides):
    values = {"num_instructions": 4, "num_seed_examples": 3, "max_new_tokens": 16, "batch_size": 4}
    return SelfInstructConfig(**{**values, **overrides})


def test_generation_accounts_for_every_call(tiny):
    model, tokenizer = tiny
    events = []
    config = si_config(max_attempts_factor=2)
    result = generate_instructions(model, tokenizer, SMALL_POOL, config, seed=0, sink=events.append)

    assert set(result.drop_counts) == set(DROP_REASONS)
    assert len(result.instructions) + sum(result.drop_counts.values()) == result.calls
    assert result.calls <= config.num_instructions * config.max_attempts_factor
    # It stops either with enough instructions or with the call budget spent.
    assert len(result.instructions) == config.num_instructions or result.calls == 8
    assert result.tokens_per_s > 0
    for index, record in enumerate(result.instructions):
        assert record == {
            "id": f"si-{index:05d}",
            "instruction": record["instruction"],
            "source": "self_instruct",
        }
        assert rule_violation(record["instruction"]) is None
        assert not RougeDeduplicator(SMALL_POOL, 0.7).is_duplicate(record["instruction"])
    assert [e["kind"] for e in events] == ["progress"] * (len(events) - 1) + ["metric"]
    fractions = [e["fraction"] for e in events[:-1]]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert events[-1]["values"]["self_instruct/calls"] == result.calls


def test_call_budget_caps_the_last_batch(tiny):
    model, tokenizer = tiny
    config = si_config(num_instructions=2, max_attempts_factor=1, batch_size=8)
    result = generate_instructions(model, tokenizer, SMALL_POOL, config, seed=1)
    assert result.calls == 2
    assert len(result.instructions) + sum(result.drop_counts.values()) == 2


def test_stops_as_soon_as_enough_are_accepted(tiny):
    """One prompt per call: the loop ends on the first acceptance, nothing is surplus."""
    model, tokenizer = tiny
    config = si_config(num_instructions=1, max_attempts_factor=20, batch_size=1)
    result = generate_instructions(model, tokenizer, SMALL_POOL, config, seed=0)
    assert len(result.instructions) == 1
    assert result.calls == 1 + sum(result.drop_counts.values())
    assert result.drop_counts["surplus"] == 0


def test_outputs_after_the_target_are_counted_as_surplus(tiny):
    model, tokenizer = tiny
    config = si_config(num_instructions=1, max_attempts_factor=8, batch_size=8)
    result = generate_instructions(model, tokenizer, SMALL_POOL, config, seed=0)
    assert result.calls == 8
    assert len(result.instructions) == 1
    # Outputs are judged in order until the first acceptance; the rest of the batch is surplus.
    judged = result.samples
    assert [s["dropped"] == "" for s in judged] == [False] * (len(judged) - 1) + [True]
    assert result.drop_counts["surplus"] == 8 - len(judged) > 0


def test_same_seed_same_instructions_greedy_too(tiny):
    model, tokenizer = tiny
    for temperature in (0.5, 0.0):
        config = si_config(temperature=temperature, max_attempts_factor=1)
        first = generate_instructions(model, tokenizer, SMALL_POOL, config, seed=3)
        second = generate_instructions(model, tokenizer, SMALL_POOL, config, seed=3)
        assert first.instructions == second.instructions
        assert first.drop_counts == second.drop_counts


DEDUP_CONFIG = {"max_attempts_factor": 2}


@pytest.fixture(scope="module")
def iteration_0(tiny):
    """(seed, accepted instructions) of a run that accepts at least two (random weights write
    mostly junk, so some seeds accept fewer)."""
    model, tokenizer = tiny
    for seed in range(10):
        result = generate_instructions(model, tokenizer, SMALL_POOL, si_config(**DEDUP_CONFIG), seed=seed)
        if len(result.instructions) >= 2:
            return seed, [r["instruction"] for r in result.instructions]
    raise AssertionError("the tiny model accepted fewer than two instructions with seeds 0..9")


def test_instructions_of_an_earlier_iteration_are_rejected_and_counted(tiny, iteration_0):
    """Iteration 1 sampling exactly what iteration 0 accepted gets every one of them rejected."""
    model, tokenizer = tiny
    seed, accepted = iteration_0
    decontaminator = Decontaminator(accepted, benchmarks=PromptIndex())
    again = generate_instructions(
        model, tokenizer, SMALL_POOL, si_config(**DEDUP_CONFIG), seed=seed, decontaminator=decontaminator
    )
    assert again.drop_counts["earlier_iteration"] == len(accepted)
    assert not {r["instruction"] for r in again.instructions} & set(accepted)
    assert len(again.instructions) + sum(again.drop_counts.values()) == again.calls


def test_generated_benchmark_prompts_and_near_paraphrases_are_dropped_and_counted(tiny, iteration_0):
    """The model's own outputs stand in for benchmark prompts: one verbatim, one with two words
    added (ROUGE-L ≥ 0.7, not an exact match)."""
    model, tokenizer = tiny
    seed, accepted = iteration_0
    benchmarks = PromptIndex([accepted[0], accepted[1] + " in short"])
    assert benchmarks.match(accepted[1]) == "similar"
    result = generate_instructions(
        model,
        tokenizer,
        SMALL_POOL,
        si_config(**DEDUP_CONFIG),
        seed=seed,
        decontaminator=Decontaminator(benchmarks=benchmarks),
    )
    assert result.drop_counts["benchmark_exact"] == 1
    assert result.drop_counts["benchmark_similar"] == 1
    assert not {r["instruction"] for r in result.instructions} & set(accepted[:2])


def test_empty_pool_is_rejected(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="pool"):
        generate_instructions(model, tokenizer, [], si_config(), seed=0)


# ---- topping up from the pool ----------------------------------------------------------------


def test_top_up_fills_with_unused_pool_prompts():
    generated = [{"id": "si-00000", "instruction": SMALL_POOL[2], "source": "self_instruct"}]
    filled, skipped = top_up_from_pool(generated, SMALL_POOL, 4, seed=0)
    assert skipped == {}
    assert filled[0] == generated[0] and len(generated) == 1
    added = filled[1:]
    assert len(added) == 3
    assert all(r["source"] == "pool" for r in added)
    assert all(r["instruction"] == SMALL_POOL[int(r["id"].removeprefix("pool-"))] for r in added)
    assert SMALL_POOL[2] not in [r["instruction"] for r in added]
    assert len({r["instruction"] for r in filled}) == 4
    assert top_up_from_pool(generated, SMALL_POOL, 4, seed=0) == (filled, {})


def test_top_up_when_pool_runs_out_or_nothing_is_needed():
    assert len(top_up_from_pool([], SMALL_POOL, 100, seed=0)[0]) == len(SMALL_POOL)
    records = [{"id": f"si-{i:05d}", "instruction": f"Task {i}", "source": "self_instruct"} for i in range(3)]
    assert top_up_from_pool(records, SMALL_POOL, 2, seed=0) == (records, {})


def test_top_up_skips_prompts_an_earlier_iteration_used_and_benchmark_prompts():
    benchmark = load_benchmark("mt_bench")[0].instruction
    pool = [*SMALL_POOL, benchmark]
    decontaminator = Decontaminator(earlier_instructions=[SMALL_POOL[0], SMALL_POOL[1].upper()])
    filled, skipped = top_up_from_pool([], pool, 100, seed=0, decontaminator=decontaminator)
    assert sorted(r["instruction"] for r in filled) == sorted(SMALL_POOL[2:])
    assert skipped == {"earlier_iteration": 2, "benchmark_exact": 1}


@pytest.mark.slow
def test_smollm2_writes_new_instructions():
    """With a real instruct model the completion prompt yields one clean instruction per call."""
    model, tokenizer = load_model_and_tokenizer("smollm2-135m-instruct")
    config = si_config(num_instructions=2, max_attempts_factor=2, batch_size=4, max_new_tokens=48)
    result = generate_instructions(model, tokenizer, SMALL_POOL, config, seed=0)
    assert result.calls == 4
    assert len(result.instructions) == 2
    assert not {record["instruction"] for record in result.instructions} & set(SMALL_POOL)


def test_completions_come_back_in_prompt_order_whatever_the_batching(tiny):
    """Greedy continuations of prompts of very different lengths, batched by length, equal each
    prompt's continuation on its own (the batches run in another order than the prompts)."""
    model, tokenizer = tiny
    config = si_config(temperature=0.0, max_new_tokens=8)
    prompts = [
        encode_prompt(SMALL_POOL[:3]),
        "Come up with a series of tasks:\n1. " + "Write a long story about the sea and its ships. " * 30,
        encode_prompt(SMALL_POOL[1:4]),
    ]
    stops = stop_strings(3)
    batched, tokens = generate_completions(model, tokenizer, prompts, config, stops)
    alone = [generate_completions(model, tokenizer, [p], config, stops)[0][0] for p in prompts]
    assert batched == alone
    assert tokens > 0


@pytest.mark.parametrize(
    ("accepted", "calls", "budget", "expected"),
    [
        (0, 0, 32, 8),  # the first batch is the configured size
        (0, 8, 32, 8),  # nothing accepted yet: no rate to go by, a full batch again
        (7, 8, 32, 2),  # 1 wanted at 7/8 accepted per call: ceil(8/7) = 2 calls, not 8
        (4, 8, 32, 8),  # 4 wanted at 1/2: 8 calls
        (2, 8, 32, 8),  # 6 wanted at 1/4 would be 24: capped at the batch size
        (7, 8, 9, 1),  # and at the calls left in the budget
    ],
)
def test_later_batches_are_sized_to_the_instructions_still_wanted(accepted, calls, budget, expected):
    config = SelfInstructConfig(num_instructions=8, batch_size=8)
    assert next_batch_size(config, accepted, calls, budget) == expected
