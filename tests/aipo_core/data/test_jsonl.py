"""Line-numbered JSONL reading and bundled-file lookup."""

import pytest

from aipo_core.data.jsonl import bundled_file, iter_jsonl


def test_iter_jsonl_yields_line_numbers_and_skips_blank_lines(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n  \n{"a": 2}\n', encoding="utf-8")
    assert list(iter_jsonl(path)) == [(1, {"a": 1}), (4, {"a": 2})]


def test_iter_jsonl_names_the_bad_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n{"a": \n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"rows\.jsonl:2: invalid JSON"):
        list(iter_jsonl(path))


def test_bundled_file():
    assert bundled_file("benchmarks/mt_bench/question.jsonl").is_file()
    with pytest.raises(FileNotFoundError, match="no/such.json"):
        bundled_file("no/such.json")
