"""Benchmark loaders against the real bundled files (and the shared originals where present)."""

import filecmp
import json
from pathlib import Path

import pytest

from aipo_core.data import BENCHMARKS, BenchmarkItem, load_benchmark, load_judge_prompts
from aipo_core.data.jsonl import bundled_file

REPO_ROOT = Path(__file__).resolve().parents[3]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
BUNDLED = Path(str(bundled_file("SOURCES.md"))).parent
BUNDLED_FILES = sorted(p.relative_to(BUNDLED).as_posix() for p in BUNDLED.rglob("*") if p.is_file())
needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="shared data folder not present")


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


def test_every_bundled_folder_has_a_licence_and_is_documented():
    sources = (BUNDLED / "SOURCES.md").read_text(encoding="utf-8")
    data_files = [f for f in BUNDLED_FILES if not f.endswith(("LICENSE", "SOURCES.md"))]
    assert len(data_files) == 8
    for relative in data_files:
        assert f"| {relative} |" in sources, relative
        assert (BUNDLED / relative).parent.joinpath("LICENSE").is_file(), relative


@needs_shared
@pytest.mark.parametrize("relative", [f for f in BUNDLED_FILES if f != "SOURCES.md"])  # SOURCES.md is adapted
def test_bundled_files_are_byte_exact_copies(relative):
    assert filecmp.cmp(BUNDLED / relative, SHARED_DATA / relative, shallow=False)


@needs_shared
def test_alpaca_eval_baseline_is_the_annotations_output_1():
    """The published judgements compare against the same baseline, in the same order."""
    annotations = json.loads(
        (SHARED_DATA / "benchmarks/alpaca_eval/annotations/gpt-3.5-turbo-1106.json").read_text(
            encoding="utf-8"
        )
    )
    items = load_benchmark("alpaca_eval")
    assert [a["instruction"] for a in annotations] == [item.instruction for item in items]
    assert [a["output_1"] for a in annotations] == [item.baseline_output for item in items]
