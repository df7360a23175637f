"""The per-iteration summary table printed by `aipo run --local` and `aipo demo`."""

from __future__ import annotations

from typing import Any

from rich.table import Table

# Row keys, in column order, with their headers and number formats.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("iteration", "iter", "d"),
    ("pairs", "pairs kept", "d"),
    ("agreement_rate", "agreement", ".2f"),
    ("win_rate", "win rate %", ".1f"),
    ("lc_win_rate", "LC win rate %", ".1f"),
    ("avg_length", "avg length (chars)", ".0f"),
)


def _fmt(value: Any, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def summary_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for _, header, _ in COLUMNS:
        table.add_column(header, justify="right")
    for row in rows:
        table.add_row(*(_fmt(row.get(key), spec) for key, _, spec in COLUMNS))
    return table
