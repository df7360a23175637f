"""Benchmark loaders against the real bundled files, and the bundled files against the checksums
and row counts of the originals recorded in files/SOURCES.md (no other copy of the data needed)."""

import hashlib
import json
import re
from pathlib import Path

import pytest

from aipo_core.data import BENCHMARKS, BenchmarkItem, load_benchmark, load_judge_prompts
from aipo_core.data.jsonl import bundled_file

BUNDLED = Path(str(bundled_file("SOURCES.md"))).parent
BUNDLED_FILES = sorted(p.relative_to(BUNDLED).as_posix() for p in BUNDLED.rglob("*") if p.is_file())
SOURCES = (BUNDLED / "SOURCES.md").read_text(encoding="utf-8")
# Rows of the first table: | here | repository @ commit | original path | licence | rows | sha256 |
_SOURCE_ROW = re.compile(r"^\| (\S+) \|.*\| (\d+) \| ([0-9a-f]{64}) \|$", re.MULTILINE)
RECORDED = {m[1]: (int(m[2]), m[3]) for m in _SOURCE_ROW.finditer(SOURCES.split("## Left out")[0])}


@pytest.mark.parametrize(
    ("name", "count", "with_baseline"),
    [("alpaca_eval", 805, 805), ("mt_bench", 80, 30), ("arena_hard", 500, 500)],
)
def test_counts_and_baselines(name, count, with_baseline):
    items = load_benchmark(name)
    assert len(items) == count
    assert len({item.id for item in items}) == count
    assert sum(item.baseline_output is not None for item in items) == with_baseline
    assert all(
        isinstance(item, BenchmarkItem) and item.instruction.strip() and item.category for item in items
    )
    assert all(item.turns[0] == item.instruction for item in items)


def test_alpaca_eval_items():
    first = load_benchmark("alpaca_eval")[0]
    assert first.id == "0"
    assert first.category == "helpful_base"
    assert first.instruction.startswith("What are the names of some famous actors")
    assert first.baseline_output.startswith("Several famous actors started their careers on Broadway")
    categories = {item.category for item in load_benchmark("alpaca_eval")}
    assert categories == {"helpful_base", "koala", "oasst", "selfinstruct", "vicuna"}


def test_mt_bench_turns_and_gpt4_references():
    items = {item.id: item for item in load_benchmark("mt_bench")}
    assert sorted(int(i) for i in items) == list(range(81, 161))
    assert all(len(item.turns) == 2 for item in items.values())
    assert {item.category for item in items.values() if item.baseline_output} == {
        "math",
        "reasoning",
        "coding",
    }
    # Question 101 (reasoning): the GPT-4 reference answer's first turn.
    assert items["101"].baseline_output.startswith("If you have just overtaken the second person")
    assert items["81"].baseline_output is None


def test_arena_hard_unwraps_answer_and_keeps_question_order():
    items = load_benchmark("arena_hard")
    assert items[0].id == "328c149ed45a41c0b9d6f14659e63599"
    assert items[0].category == "ABC Sequence Puzzles & Groups"
    assert all(isinstance(item.baseline_output, str) and item.baseline_output for item in items)
    by_id = {item.id: item for item in items}
    assert by_id["0122ab60646b4961bc39e9c03bdf6bcc"].baseline_output.startswith("To implement a SCIM")


def test_limit():
    assert [item.id for item in load_benchmark("mt_bench", limit=3)] == ["81", "82", "83"]
    assert load_benchmark("alpaca_eval", limit=0) == []
    assert len(load_benchmark("arena_hard", limit=10_000)) == 500


@pytest.mark.parametrize("limit", [-1, 1.5, True, "3"])
def test_bad_limit_is_rejected(limit):
    with pytest.raises(ValueError, match="limit"):
        load_benchmark("alpaca_eval", limit=limit)


def test_unknown_benchmark_names_the_valid_ones():
    with pytest.raises(ValueError, match="alpaca_eval, mt_bench, arena_hard"):
        load_benchmark("mmlu")
    assert BENCHMARKS == ("alpaca_eval", "mt_bench", "arena_hard")


def test_returned_list_is_a_copy():
    items = load_benchmark("mt_bench")
    items.clear()
    assert len(load_benchmark("mt_bench")) == 80


def test_judge_prompts():
    prompts = load_judge_prompts()
    assert len(prompts) == 8
    assert "{question}" in prompts["pair-v2"]["prompt_template"]
    assert prompts["single-math-v1"]["output_format"] == "[[rating]]"


DATA_FILES = [f for f in BUNDLED_FILES if not f.endswith(("LICENSE", "SOURCES.md"))]


def test_every_bundled_file_is_documented_with_checksum_and_licence():
    assert sorted(RECORDED) == DATA_FILES
    assert len(DATA_FILES) == 7
    for relative in DATA_FILES:
        assert (BUNDLED / relative).parent.joinpath("LICENSE").is_file(), relative


@pytest.mark.parametrize("relative", DATA_FILES)
def test_bundled_files_are_byte_exact_copies_of_the_originals(relative):
    rows, sha256 = RECORDED[relative]
    data = (BUNDLED / relative).read_bytes()
    assert hashlib.sha256(data).hexdigest() == sha256
    text = data.decode("utf-8")
    counted = (
        len(json.loads(text))
        if relative.endswith(".json")
        else sum(1 for line in text.splitlines() if line.strip())
    )
    assert counted == rows


def test_contaminated_pool_file_is_not_bundled_and_its_removal_is_recorded():
    removed = "prompts/self_instruct/user_oriented_instructions.jsonl"
    assert removed not in BUNDLED_FILES
    left_out = SOURCES.split("## Left out")[1]
    assert (
        f"| {removed} |" in left_out
        and "81d60a117db495cecedecd9193504fd07c5b5a42f6699ef6b0f9da10fc22f42e" in left_out
    )
