"""Pairs: idempotent replace, filters, keyset pagination, record round trip."""

from __future__ import annotations

import pytest

from backend.store import pairs, runs
from tests.backend.conftest import small_config


def pair_record(i: int, *, s_ref: float | None = None, text: str = "") -> dict:
    return {
        "id": f"p-{i}",
        "prompt": [{"role": "user", "content": f"prompt {i} {text}"}],
        "chosen": [{"role": "assistant", "content": f"chosen {i}"}],
        "rejected": [{"role": "assistant", "content": f"rejected {i}"}],
        "score_chosen": 0.9,
        "score_rejected": 0.1,
        "chosen_length": 10 + i % 7,
        "rejected_length": 10,
        "chosen_chars": 40,
        "rejected_chars": 30,
        "ref_chosen_logps": -10.0,
        "ref_rejected_logps": -10.0 - (s_ref if s_ref is not None else (i % 5) - 2),
        "custom_field": i,
    }


def test_replace_is_idempotent_per_iteration(session) -> None:
    run = runs.create_run(session, small_config())
    assert pairs.replace_pairs(session, run.id, 0, [pair_record(i) for i in range(30)]) == 30
    assert pairs.replace_pairs(session, run.id, 1, [pair_record(i) for i in range(5)]) == 5
    assert (
        pairs.replace_pairs(session, run.id, 0, [pair_record(i) for i in range(20)]) == 20
    )  # a retried stage
    session.commit()
    _, _, total = pairs.query_pairs(session, run.id, include_total=True)
    assert total == 25
    assert pairs.pair_stats_by_iteration(session, run.id)[0]["pairs"] == 20


def test_s_ref_is_derived_from_reference_logps(session) -> None:
    run = runs.create_run(session, small_config())
    pairs.replace_pairs(session, run.id, 0, [pair_record(0, s_ref=2.5)])
    (row,), _, _ = pairs.query_pairs(session, run.id)
    assert row.s_ref == pytest.approx(2.5)
    record = pairs.pair_record(row)
    assert record["chosen"] == [{"role": "assistant", "content": "chosen 0"}] and record["custom_field"] == 0


def test_pair_diagnostics_merge_into_extra_idempotently(session) -> None:
    run = runs.create_run(session, small_config())
    pairs.replace_pairs(session, run.id, 0, [pair_record(i) for i in range(3)])
    diagnostics = [
        {"id": f"p-{i}", "s_theta": 1.0 * i, "gradient_weight": 0.1 * i, "reward_chosen": float("nan")}
        for i in range(3)
    ]
    assert pairs.attach_pair_diagnostics(session, run.id, 0, diagnostics) == 3
    assert pairs.attach_pair_diagnostics(session, run.id, 0, diagnostics) == 3  # a retried evaluate
    session.commit()
    rows, _, _ = pairs.query_pairs(session, run.id)
    assert [r.extra for r in rows] == [
        {"custom_field": i, "s_theta": 1.0 * i, "gradient_weight": 0.1 * i, "reward_chosen": None}
        for i in range(3)
    ]
    assert pairs.pair_record(rows[2])["gradient_weight"] == pytest.approx(0.2)


def test_pair_diagnostics_that_do_not_match_write_nothing(session) -> None:
    run = runs.create_run(session, small_config())
    pairs.replace_pairs(session, run.id, 0, [pair_record(i) for i in range(2)])
    session.commit()
    with pytest.raises(ValueError, match="1 records for 2 stored pairs"):
        pairs.attach_pair_diagnostics(session, run.id, 0, [{"id": "p-0", "gradient_weight": 0.5}])
    swapped = [{"id": "p-1", "gradient_weight": 0.5}, {"id": "p-0", "gradient_weight": 0.5}]
    with pytest.raises(ValueError, match=r"pair_diagnostics\[0\]: id 'p-1' does not match"):
        pairs.attach_pair_diagnostics(session, run.id, 0, swapped)
    session.rollback()
    rows, _, _ = pairs.query_pairs(session, run.id)
    assert all("gradient_weight" not in (r.extra or {}) for r in rows)


def test_bad_records_name_the_field(session) -> None:
    run = runs.create_run(session, small_config())
    bad = pair_record(0) | {
        "chosen": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]
    }
    with pytest.raises(ValueError, match=r"pairs\[1\]\.chosen"):
        pairs.replace_pairs(session, run.id, 0, [pair_record(0), bad])


def test_filters_and_keyset_pages(session) -> None:
    run = runs.create_run(session, small_config())
    records = [pair_record(i, text="needle_%" if i % 10 == 0 else "hay") for i in range(100)]
    pairs.replace_pairs(session, run.id, 0, records[:60])
    pairs.replace_pairs(session, run.id, 1, records[60:])
    session.commit()

    def collect(**filters) -> list[tuple[int, int]]:
        seen, cursor = [], None
        while True:
            page, cursor, _ = pairs.query_pairs(session, run.id, limit=7, cursor=cursor, **filters)
            seen += [(p.iteration, p.idx) for p in page]
            if cursor is None:
                return seen

    everything = collect()
    assert everything == sorted(everything) and len(set(everything)) == 100
    assert len(collect(iteration=1)) == 40
    agree = collect(agreement="agree")
    disagree = collect(agreement="disagree")
    assert len(agree) + len(disagree) == 100
    assert len(agree) == sum(1 for i in range(100) if (i % 5) - 2 > 0)
    assert len(collect(min_length_diff=3, max_length_diff=4)) == sum(1 for i in range(100) if i % 7 in (3, 4))
    assert len(collect(q="NEEDLE_%")) == 10  # case-insensitive, wildcards literal
    assert collect(q="no such text") == []
    combined = collect(iteration=0, q="needle", agreement="disagree")
    assert combined == [(0, i) for i in range(0, 60, 10) if (i % 5) - 2 <= 0]


def test_pair_stats_agreement_rate(session) -> None:
    run = runs.create_run(session, small_config())
    pairs.replace_pairs(session, run.id, 0, [pair_record(i, s_ref=1.0 if i < 3 else -1.0) for i in range(4)])
    stats = pairs.pair_stats_by_iteration(session, run.id)[0]
    assert stats["agreement_rate"] == pytest.approx(0.75) and stats["mean_s_ref"] == pytest.approx(0.5)


def test_model_text_with_nul_characters_is_stored(session) -> None:
    """A byte-level tokenizer can emit NUL, which PostgreSQL text/JSONB refuse: stored as U+FFFD."""
    run = runs.create_run(session, small_config())
    record = pair_record(0)
    record["chosen"] = [{"role": "assistant", "content": "a\x00b"}]
    record["custom_field"] = "x\x00"
    assert pairs.replace_pairs(session, run.id, 0, [record]) == 1
    session.commit()
    (row,), _, _ = pairs.query_pairs(session, run.id)
    stored = pairs.pair_record(row)
    assert stored["chosen"] == [{"role": "assistant", "content": "a\ufffdb"}]
    assert stored["custom_field"] == "x\ufffd"
