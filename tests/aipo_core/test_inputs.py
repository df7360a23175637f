"""check_inputs: the files and models a config names, read before a run starts."""

import json

import pytest

from aipo_core.access import ModelAccess
from aipo_core.config import RunConfig
from aipo_core.inputs import check_inputs, check_model

LOCAL = ModelAccess.for_local_run()
GOOD_PAIR = {"prompt": "Name a prime.", "chosen": "7", "rejected": "8"}


def pairs_file(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def config(**fields):
    return RunConfig(**{"name": "x", "model": "tiny-random-llama", **fields})


def by_field(report):
    return {check.field: check for check in report.checks}


def test_a_row_missing_rejected_is_reported_with_its_line_and_the_good_rows_counted(tmp_path):
    rows = [{**GOOD_PAIR, "prompt": f"Q{i}?"} for i in range(9)]
    del rows[5]["rejected"]
    path = pairs_file(tmp_path / "file.jsonl", rows)
    report = check_inputs(config(initial_pairs=str(path)), LOCAL)
    check = by_field(report)["initial_pairs"]
    assert not report.ok and check.verdict == "error" and check.kind == "invalid_rows"
    assert [str(row) for row in check.bad_rows] == [f"{path}:6: missing field 'rejected'"]
    assert check.detail == "1 row bad, 8 good"
    (problem,) = report.problems()
    assert problem.loc == ("initial_pairs",)
    assert problem.message == f"{path}:6: missing field 'rejected' (1 row bad, 8 good)"


def test_only_the_first_bad_rows_are_listed_but_all_are_counted(tmp_path):
    rows = [GOOD_PAIR if i % 2 else {"prompt": "q"} for i in range(20)]
    path = pairs_file(tmp_path / "p.jsonl", [{**r, "id": i} for i, r in enumerate(rows)])
    check = by_field(check_inputs(config(initial_pairs=str(path)), LOCAL, max_bad_rows=3))["initial_pairs"]
    assert [row.line for row in check.bad_rows] == [1, 3, 5]
    assert check.detail == "10 rows bad, 10 good"


def test_a_bounded_check_reads_only_the_first_bytes_and_says_so(tmp_path):
    good = [{**GOOD_PAIR, "id": i} for i in range(100)]
    path = pairs_file(tmp_path / "big.jsonl", [*good, {"prompt": "late", "chosen": "a"}])
    line_bytes = len(json.dumps(good[0])) + 1
    bounded = by_field(check_inputs(config(initial_pairs=str(path)), LOCAL, max_bytes=10 * line_bytes))
    assert bounded["initial_pairs"].verdict == "ok"
    assert bounded["initial_pairs"].detail.startswith("10 pairs in its first ")
    assert "the rest is read when the run needs it" in bounded["initial_pairs"].detail
    full = by_field(check_inputs(config(initial_pairs=str(path)), LOCAL))["initial_pairs"]
    assert full.verdict == "error" and full.bad_rows[0].line == 101


def test_missing_and_empty_files(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    report = check_inputs(
        config(initial_pairs=str(tmp_path / "nope.jsonl"), prompt_pool=str(tmp_path / "empty.jsonl")), LOCAL
    )
    checks = by_field(report)
    assert (
        checks["initial_pairs"].kind == "file_not_found"
        and "does not exist" in checks["initial_pairs"].detail
    )
    assert checks["prompt_pool"].kind == "empty_file"
    assert {p.loc for p in report.problems()} == {("initial_pairs",), ("prompt_pool",)}


def test_a_pool_file_counts_prompts_and_repeats(tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_text('{"instruction": "A."}\n{"prompt": "B."}\n{"instruction": "A."}\n')
    check = by_field(check_inputs(config(prompt_pool=str(pool)), LOCAL))["prompt_pool"]
    assert check.verdict == "ok" and check.detail == "3 prompts (1 repeated, used once)"
    bundled = by_field(check_inputs(config(), LOCAL))["prompt_pool"]
    assert bundled.detail == "bundled pool, 175 prompts"


def test_paths_obey_the_policy_the_caller_passes(tmp_path):
    outside = pairs_file(tmp_path / "outside.jsonl", [GOOD_PAIR])
    root = tmp_path / "root"
    root.mkdir()
    server = ModelAccess(data_roots=(root,))
    check = by_field(check_inputs(config(initial_pairs=str(outside)), server))["initial_pairs"]
    assert check.kind == "path_not_allowed" and "outside the allowed data roots" in check.detail
    assert by_field(check_inputs(config(initial_pairs=str(outside)), LOCAL))["initial_pairs"].verdict == "ok"


def test_skipped_fields_are_not_read(tmp_path):
    report = check_inputs(
        config(initial_pairs=str(tmp_path / "nope.jsonl")), LOCAL, skip=[("initial_pairs",)]
    )
    assert "initial_pairs" not in by_field(report) and report.ok


def test_model_specs_resolve_or_say_why(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    assert check_model(str(folder), ("model",), LOCAL).kind == "not_a_checkpoint"  # no config.json
    (folder / "config.json").write_text('{"model_type": "llama"}')
    ok = check_model(str(folder), ("model",), LOCAL)
    assert ok.verdict == "ok" and ok.detail == f"checkpoint folder {folder.resolve()} (llama)"
    (folder / "modeling_evil.py").write_text("import os\n")
    assert check_model(str(folder), ("model",), LOCAL).kind == "remote_code_refused"
    assert check_model(str(tmp_path / "missing"), ("model",), LOCAL).kind == "not_a_checkpoint"
    assert check_model("smollm2-135m-instruct", ("model",), LOCAL).verdict == "ok"
    assert check_model("tiny-random-llama", ("model",), LOCAL).verdict == "ok"
    hub = check_model("Qwen/Qwen2.5-0.5B", ("model",), LOCAL)
    assert hub.verdict == "ok" and "whether it exists is known once fetched" in hub.detail
    refused = check_model("Qwen/Qwen2.5-0.5B", ("model",), ModelAccess(hub_models=("HuggingFaceTB/*",)))
    assert refused.kind == "hub_model_not_allowed"
    assert check_model("not a model", ("model",), LOCAL).kind == "invalid_model_spec"
    assert check_model("policy", ("ranker", "model"), LOCAL, aliases=("policy",)).verdict == "ok"


@pytest.mark.parametrize(("benchmarks", "limit", "detail"), [
    (["alpaca_eval", "mt_bench"], 32, "prompts evaluated: alpaca_eval 32/805, mt_bench 32/80"),
    (["arena_hard"], None, "prompts evaluated: arena_hard 500/500"),
])  # fmt: skip
def test_benchmarks_are_found_with_their_sizes(benchmarks, limit, detail):
    report = check_inputs(config(evaluation={"benchmarks": benchmarks, "limit": limit}), LOCAL)
    assert by_field(report)["evaluation.benchmarks"].detail == detail
    empty = by_field(check_inputs(config(evaluation={"benchmarks": []}), LOCAL))["evaluation.benchmarks"]
    assert empty.verdict == "warn"
