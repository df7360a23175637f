"""Shared helpers to turn JSONL artifact records into table rows (pairs, eval samples)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

BATCH = 1_000


def finite_or_none(value: Any) -> float | None:
    """SQL and JSON have no NaN/inf: store them as NULL."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def storable(value: Any) -> Any:
    """`value` with every NUL character replaced by U+FFFD, recursively.

    Model output is arbitrary text: a byte-level tokenizer can emit NUL, which PostgreSQL text and
    JSONB refuse. The artifact keeps the exact text; the store shows the replacement character.
    """
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    return value


def batches(items: Iterable[Any], size: int = BATCH) -> Iterator[list[Any]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def split_extra(record: dict[str, Any], known: set[str]) -> dict[str, Any] | None:
    """Keys the table has no column for, kept as JSON so an export loses nothing."""
    extra = {k: v for k, v in record.items() if k not in known}
    return extra or None
