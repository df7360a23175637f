"""Line-numbered JSONL reading and bundled-file lookup."""

import pytest

from aipo_core.data.jsonl import DataFileError, bundled_file, iter_jsonl, scan_jsonl


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


def test_scan_reads_past_bad_lines_and_names_each(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": \n[1, 2]\n\xff\xfe\n{"a": 5}\n')
    rows = list(scan_jsonl(path))
    assert [line for line, _ in rows] == [1, 2, 3, 4, 5]
    assert rows[0][1] == {"a": 1} and rows[4][1] == {"a": 5}
    errors = {line: row for line, row in rows if isinstance(row, DataFileError)}
    assert sorted(errors) == [2, 3, 4]
    assert str(errors[2]) == f"{path}:2: invalid JSON (Expecting value)"
    assert errors[3].reason == "expected a JSON object, got list" and errors[3].line == 3
    assert errors[4].reason.startswith("not UTF-8 text")


def test_iter_jsonl_raises_a_data_file_error_for_bytes_that_are_not_utf8(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": "\xff"}\n')
    with pytest.raises(DataFileError, match=r"rows\.jsonl:2: not UTF-8 text") as caught:
        list(iter_jsonl(path))
    assert caught.value.line == 2


def test_a_bounded_scan_reads_at_most_max_bytes_and_never_parses_a_cut_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    line = b'{"a": 1}\n'  # 9 bytes
    path.write_bytes(line * 3 + b'{"a": "' + b"x" * 10_000 + b'"}\n')
    assert [n for n, _ in scan_jsonl(path, max_bytes=18)] == [1, 2]
    # The bound falls inside line 4: lines 1-3 are read, the cut line is neither parsed nor an error.
    assert [(n, r) for n, r in scan_jsonl(path, max_bytes=100)] == [
        (1, {"a": 1}),
        (2, {"a": 1}),
        (3, {"a": 1}),
    ]
    assert len(list(scan_jsonl(path))) == 4
    endless = tmp_path / "endless.jsonl"
    endless.write_bytes(b"x" * 1_000_000)
    assert list(scan_jsonl(endless, max_bytes=1024)) == []
