"""Prompt pools: the bundled self-instruct pool and user JSONL files."""

import json

import pytest

from aipo_core.data import SELF_INSTRUCT_SEEDS, DataFileError, load_prompt_pool
from aipo_core.data.pools import join_instruction_and_input, scan_pool_rows


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_bundled_pool_is_the_seed_tasks_in_order():
    """The 252 user-oriented self-instruct tasks are AlpacaEval prompts and are not bundled."""
    pool = load_prompt_pool(SELF_INSTRUCT_SEEDS)
    assert len(pool) == 175
    assert len(set(pool)) == len(pool)
    assert pool[0].startswith("Is there anything I can eat for a breakfast that doesn't include eggs")
    assert not any(p.startswith("The sentence you are given might be too wordy") for p in pool)
    # A task's input completes its instruction after a blank line.
    assert pool[1] == "What is the relation between the given pairs?\n\nNight : Day :: Right : Left"


def test_pool_keeps_same_instruction_with_different_inputs(tmp_path):
    """De-duplication is by whole prompt: one instruction with different inputs is different tasks."""
    rows = [{"instruction": "Answer the following question.", "input": q} for q in ("Why?", "How?", "Why?")]
    path = write_lines(tmp_path / "pool.jsonl", [json.dumps(r) for r in rows])
    assert load_prompt_pool(str(path)) == [
        "Answer the following question.\n\nWhy?",
        "Answer the following question.\n\nHow?",
    ]


def test_join_instruction_and_input():
    assert join_instruction_and_input(" Sort these. ", " b, a \n") == "Sort these.\n\nb, a"
    assert join_instruction_and_input("Tell a joke.", "") == "Tell a joke."
    assert join_instruction_and_input("Tell a joke.", "  \n") == "Tell a joke."
    assert join_instruction_and_input("Tell a joke.", None) == "Tell a joke."


def test_jsonl_pool_accepts_instruction_and_trl_prompt_rows(tmp_path):
    path = write_lines(
        tmp_path / "pool.jsonl",
        [
            json.dumps({"instruction": "Summarize the text.", "input": "Cats sleep a lot."}),
            json.dumps({"instruction": "Name three rivers."}),
            "",
            json.dumps({"prompt": "  Explain recursion.  "}),
            json.dumps(
                {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]}
            ),
            json.dumps({"instruction": "Name three rivers.", "input": ""}),
        ],
    )
    assert load_prompt_pool(str(path)) == [
        "Summarize the text.\n\nCats sleep a lot.",
        "Name three rivers.",
        "Explain recursion.",
        "Hi?",
    ]


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        ('{"instruction": ""}', "pool.jsonl:3: field 'instruction' is empty"),
        ('{"instruction": 5}', "pool.jsonl:3: field 'instruction' must be a string"),
        ('{"instruction": "Do it.", "input": ["x"]}', "pool.jsonl:3: field 'input' must be a string"),
        ('{"text": "hello"}', "pool.jsonl:3: expected a field 'instruction'"),
        ('{"instruction": "unterminated', "pool.jsonl:3: invalid JSON"),
        ('["a", "list"]', "pool.jsonl:3: expected a JSON object"),
        (
            '{"prompt": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}',
            "pool.jsonl:3: field 'prompt' must hold exactly one user message",
        ),
        ('{"prompt": [{"role": "user"}]}', r"pool.jsonl:3: field 'prompt'\[0\] must be a message"),
        ('{"prompt": [{"role": "user", "content": " "}]}', "pool.jsonl:3: field 'prompt' has an empty user"),
    ],
)
def test_bad_row_error_names_file_line_and_field(tmp_path, bad_row, message):
    path = write_lines(
        tmp_path / "pool.jsonl", ['{"instruction": "Fine."}', '{"prompt": "Also fine."}', bad_row]
    )
    with pytest.raises(ValueError, match=message):
        load_prompt_pool(str(path))


def test_unknown_pool_lists_bundled_names(tmp_path):
    with pytest.raises(FileNotFoundError, match="self_instruct_seeds"):
        load_prompt_pool(str(tmp_path / "missing.jsonl"))


def test_empty_file_is_an_error(tmp_path):
    path = write_lines(tmp_path / "empty.jsonl", [""])
    with pytest.raises(ValueError, match="no prompts"):
        load_prompt_pool(str(path))


def test_scan_reports_bad_rows_with_their_lines_and_reads_on(tmp_path):
    path = write_lines(
        tmp_path / "pool.jsonl", ['{"instruction": "One."}', '{"output": "x"}', "", '{"prompt": "Two."}']
    )
    scanned = list(scan_pool_rows(path))
    assert [(line, r) for line, r in scanned if isinstance(r, str)] == [(1, "One."), (4, "Two.")]
    (line, error), = [(line, r) for line, r in scanned if isinstance(r, DataFileError)]
    assert line == 2 and error.reason == "expected a field 'instruction' (optionally 'input') or 'prompt'"
