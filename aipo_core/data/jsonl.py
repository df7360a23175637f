"""Reading the bundled files and user JSONL with errors that point at the offending line.

Users hand us prompt pools and preference datasets of thousands of lines; an error that says
"bad row" without a line number is useless, so every row carries its 1-based line number.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

PathLike = Path | Traversable


def bundled_file(relative: str) -> Traversable:
    """A data file shipped inside the package, e.g. ``bundled_file("benchmarks/mt_bench/question.jsonl")``."""
    target = resources.files(__package__).joinpath("files", *relative.split("/"))
    if not target.is_file():
        raise FileNotFoundError(f"bundled data file {relative!r} is missing from the installed package")
    return target


def iter_jsonl(path: PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for every non-blank line; raise ValueError naming the line
    when a line is not valid JSON or not a JSON object."""
    with path.open("r", encoding="utf-8") as fh:
        for line_number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{line_number}: invalid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{line_number}: expected a JSON object, got {type(row).__name__}")
            yield line_number, row


def read_json(path: PathLike) -> Any:
    """Parse a whole JSON file."""
    with path.open("r", encoding="utf-8") as fh:
        return json.load(fh)
