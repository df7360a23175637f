"""A judgement in words (aipo_core.eval_summary.verdict)."""

from __future__ import annotations

from aipo_core.eval_summary import verdict


def test_verdict_in_words() -> None:
    assert [verdict(p) for p in (2.0, 1.0, 1.5, 0, None, 1.7, 1.2)] == [
        "model preferred", "baseline preferred", "tie", "tie", "not judged", "model preferred",
        "baseline preferred",
    ]  # fmt: skip
