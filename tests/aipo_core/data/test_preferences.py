"""Importing TRL preference JSONL as iteration 0's pairs."""

import json

import pytest

from aipo_core.data import DataFileError, MissingDataFile, load_preference_pairs
from aipo_core.data.preferences import scan_preference_rows
from aipo_core.models import load_tokenizer

PAIR_KEYS = {
    "id", "prompt", "chosen", "rejected", "score_chosen", "score_rejected", "chosen_chars", "rejected_chars",
}  # fmt: skip
USER = {"role": "user", "content": "What color is the sky?"}
BLUE = {"role": "assistant", "content": "It is blue."}
GREEN = {"role": "assistant", "content": "Green, probably."}


def write_rows(path, rows):
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return load_tokenizer("tiny-random-llama", cache_dir=tmp_path_factory.mktemp("models"))


def test_conversational_rows_with_explicit_prompt(tmp_path):
    path = write_rows(tmp_path / "p.jsonl", [{"prompt": [USER], "chosen": [BLUE], "rejected": [GREEN]}])
    [pair] = load_preference_pairs(path)
    assert set(pair) == PAIR_KEYS
    assert pair == {
        "id": "pair-000000",
        "prompt": [USER],
        "chosen": [BLUE],
        "rejected": [GREEN],
        "score_chosen": None,
        "score_rejected": None,
        "chosen_chars": len("It is blue."),
        "rejected_chars": len("Green, probably."),
    }


def test_implicit_prompt_as_in_ultrafeedback_binarized(tmp_path):
    """UltraFeedback-binarized: string prompt + full conversations + scores + prompt_id."""
    row = {
        "prompt": USER["content"],
        "prompt_id": "abc123",
        "chosen": [USER, BLUE],
        "rejected": [USER, GREEN],
        "score_chosen": 8.5,
        "score_rejected": 3,
    }
    [pair] = load_preference_pairs(write_rows(tmp_path / "uf.jsonl", [row]))
    assert pair["id"] == "abc123"
    assert (pair["prompt"], pair["chosen"], pair["rejected"]) == ([USER], [BLUE], [GREEN])
    assert (pair["score_chosen"], pair["score_rejected"]) == (8.5, 3.0)


def test_implicit_prompt_without_prompt_field_keeps_system_turns(tmp_path):
    system = {"role": "system", "content": "Be terse."}
    [pair] = load_preference_pairs(
        write_rows(
            tmp_path / "p.jsonl", [{"chosen": [system, USER, BLUE], "rejected": [system, USER, GREEN]}]
        )
    )
    assert pair["prompt"] == [system, USER]
    assert pair["chosen"] == [BLUE]


def test_plain_string_rows(tmp_path):
    rows = [
        {"id": 7, "prompt": "Say hi.", "chosen": "Hi!", "rejected": "No."},
        {"prompt": "Count to two.", "chosen": "1, 2", "rejected": "3"},
    ]
    pairs = load_preference_pairs(write_rows(tmp_path / "p.jsonl", rows))
    assert [p["id"] for p in pairs] == ["7", "pair-000001"]
    assert pairs[0]["prompt"] == [{"role": "user", "content": "Say hi."}]
    assert pairs[0]["chosen"] == [{"role": "assistant", "content": "Hi!"}]
    assert pairs[1]["rejected"] == [{"role": "assistant", "content": "3"}]


def test_token_lengths_with_a_tokenizer(tmp_path, tokenizer):
    path = write_rows(tmp_path / "p.jsonl", [{"prompt": [USER], "chosen": [BLUE], "rejected": [GREEN]}])
    [pair] = load_preference_pairs(path, tokenizer=tokenizer)
    assert pair["chosen_length"] == len(tokenizer("It is blue.", add_special_tokens=False)["input_ids"])
    assert pair["rejected_length"] == len(
        tokenizer("Green, probably.", add_special_tokens=False)["input_ids"]
    )
    assert pair["chosen_length"] > 0
    assert "ref_chosen_logps" not in pair and "s_ref" not in pair


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        ({"prompt": "q", "chosen": "a"}, "p.jsonl:2: missing field 'rejected'"),
        (
            {"prompt": "q", "chosen": [BLUE], "rejected": "b"},
            "p.jsonl:2: 'chosen' and 'rejected' must both be",
        ),
        ({"chosen": "a", "rejected": "b"}, "p.jsonl:2: missing field 'prompt'"),
        ({"chosen": [BLUE], "rejected": [GREEN]}, "p.jsonl:2: missing field 'prompt'"),
        ({"prompt": "q", "chosen": "", "rejected": "b"}, "p.jsonl:2: field 'chosen' is empty"),
        ({"prompt": 3, "chosen": "a", "rejected": "b"}, "p.jsonl:2: field 'prompt' must be a string"),
        (
            {"prompt": [USER], "chosen": [USER], "rejected": [GREEN]},
            "p.jsonl:2: field 'chosen' must be one or more",
        ),
        (
            {"prompt": [BLUE], "chosen": [BLUE], "rejected": [GREEN]},
            "p.jsonl:2: field 'prompt' must end with a user",
        ),
        (
            {"prompt": [], "chosen": [BLUE], "rejected": [GREEN]},
            "p.jsonl:2: field 'prompt' is an empty message list",
        ),
        (
            {"prompt": [USER], "chosen": [], "rejected": [GREEN]},
            "p.jsonl:2: field 'chosen' is an empty message list",
        ),
        (
            {"prompt": [USER], "chosen": [{"role": "bot", "content": "x"}], "rejected": [GREEN]},
            r"p.jsonl:2: field 'chosen'\[0\].role must be one of",
        ),
        (
            {"prompt": [USER], "chosen": [{"role": "assistant", "content": 1}], "rejected": [GREEN]},
            r"p.jsonl:2: field 'chosen'\[0\].content must be a string",
        ),
        (
            {"prompt": "q", "chosen": "a", "rejected": "b", "score_chosen": "9"},
            "p.jsonl:2: field 'score_chosen'",
        ),
        (
            {"prompt": "q", "chosen": "a", "rejected": "b", "id": "first"},
            "p.jsonl:2: id 'first' already used on line 1",
        ),
        ('{"prompt": ', "p.jsonl:2: invalid JSON"),
    ],
)
def test_bad_rows_name_file_line_and_field(tmp_path, bad_row, message):
    good = {"id": "first", "prompt": "q", "chosen": "a", "rejected": "b"}
    with pytest.raises(ValueError, match=message):
        load_preference_pairs(write_rows(tmp_path / "p.jsonl", [good, bad_row]))


def test_missing_or_empty_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_preference_pairs(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="no rows"):
        load_preference_pairs(write_rows(tmp_path / "empty.jsonl", [""]))


def test_scan_reports_every_bad_row_and_keeps_the_good_ones(tmp_path):
    good = {"prompt": "q", "chosen": "a", "rejected": "b"}
    rows = [
        {**good, "id": "a"},
        {"prompt": "q", "chosen": "a"},  # line 2: no rejected
        {**good, "id": "b"},
        "not json",
        {**good, "id": "a"},  # line 5: repeats line 1's id
        {**good, "id": "c"},
    ]
    scanned = list(scan_preference_rows(write_rows(tmp_path / "p.jsonl", rows)))
    bad = {line: str(result) for line, result in scanned if isinstance(result, DataFileError)}
    assert [line for line, result in scanned if isinstance(result, dict)] == [1, 3, 6]
    assert bad == {
        2: f"{tmp_path / 'p.jsonl'}:2: missing field 'rejected'",
        4: f"{tmp_path / 'p.jsonl'}:4: invalid JSON (Expecting value)",
        5: f"{tmp_path / 'p.jsonl'}:5: id 'a' already used on line 1",
    }


def test_a_missing_file_is_a_missing_data_file_error(tmp_path):
    with pytest.raises(MissingDataFile, match="does not exist") as caught:
        list(scan_preference_rows(tmp_path / "nope.jsonl"))
    assert isinstance(caught.value, FileNotFoundError) and caught.value.line is None
