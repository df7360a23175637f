"""How `aipo validate` shows what a config points to (`aipo_core.inputs.InputReport`): a rich
table on a terminal, one plain line per field elsewhere (a CI log stays greppable), each bad row
on its own line as `file:line: reason` under its field."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from aipo_cli.progress import is_terminal
from aipo_core.inputs import InputReport

STYLES = {"ok": "green", "warn": "yellow", "error": "bold red"}


def report_lines(report: InputReport) -> list[str]:
    """`verdict  field  value  detail` per field, then its bad rows, indented."""
    field = max((len(check.field) for check in report.checks), default=0)
    value = max((len(check.value) for check in report.checks), default=0)
    lines = []
    for check in report.checks:
        line = f"{check.verdict:<5}  {check.field:<{field}}  {check.value:<{value}}  {check.detail}"
        lines.append(line.rstrip())
        lines += [f"         {row}" for row in check.bad_rows]
    return lines


def report_table(report: InputReport) -> Table:
    table = Table(title="What the config points to", title_justify="left")
    for column in ("field", "value", "verdict", "found"):
        table.add_column(column, overflow="fold")
    for check in report.checks:
        found = Text(check.detail)
        for row in check.bad_rows:
            found.append(f"\n{row}", style="red")
        table.add_row(check.field, check.value, Text(check.verdict, style=STYLES[check.verdict]), found)
    return table


def print_report(report: InputReport, console: Console) -> None:
    if is_terminal(console):
        console.print(report_table(report))
    else:
        console.file.write("\n".join(report_lines(report)) + "\n")
        console.file.flush()
