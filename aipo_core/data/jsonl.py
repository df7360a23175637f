"""Reading the bundled files and user JSONL with errors that point at the offending line.

Users hand us prompt pools and preference datasets of thousands of lines; an error that says
"bad row" without a line number is useless, so every row carries its 1-based line number and
every refusal is a `DataFileError` naming the file, the line and the reason. `scan_jsonl` reads
past bad lines (a check reports all of them); `iter_jsonl` stops at the first.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

PathLike = Path | Traversable


class DataFileError(ValueError):
    """A user data file the readers refuse: `path`, the 1-based `line` (None: the whole file) and
    why (`reason`). Its text is `path:line: reason`, the form editors and terminals link to."""

    def __init__(self, path: PathLike | str, reason: str, line: int | None = None) -> None:
        super().__init__(f"{path}:{line}: {reason}" if line is not None else f"{path}: {reason}")
        self.path, self.reason, self.line = str(path), reason, line


class MissingDataFile(DataFileError, FileNotFoundError):
    """The file a config names does not exist (still a FileNotFoundError for older callers)."""

    def __init__(self, path: PathLike | str, reason: str) -> None:
        DataFileError.__init__(self, path, reason)

    def __str__(self) -> str:
        return self.reason


def row_error(path: PathLike | str, line: int, error: ValueError) -> DataFileError:
    """`error` (raised by a row parser with `where=f"{path}:{line}"`) as a DataFileError."""
    if isinstance(error, DataFileError):
        return error
    return DataFileError(path, str(error).removeprefix(f"{path}:{line}: "), line)


def bundled_file(relative: str) -> Traversable:
    """A data file shipped inside the package, e.g. ``bundled_file("benchmarks/mt_bench/question.jsonl")``."""
    target = resources.files(__package__).joinpath("files", *relative.split("/"))
    if not target.is_file():
        raise FileNotFoundError(f"bundled data file {relative!r} is missing from the installed package")
    return target


def scan_jsonl(
    path: PathLike, *, max_bytes: int | None = None
) -> Iterator[tuple[int, dict[str, Any] | DataFileError]]:
    """Yield ``(line_number, object or DataFileError)`` for every non-blank line, reading on past
    a line that is not UTF-8, not JSON or not a JSON object.

    With `max_bytes`, at most that many bytes are read (a bounded check of a large file, where
    even one endless line must not be read whole); a line cut off by the bound is not parsed.
    """
    read, line_number = 0, 0
    with path.open("rb") as fh:
        while max_bytes is None or read < max_bytes:
            raw = fh.readline(-1 if max_bytes is None else max_bytes - read)
            if not raw:
                return
            read += len(raw)
            line_number += 1
            if not raw.endswith(b"\n") and max_bytes is not None and read >= max_bytes and fh.read(1):
                return  # cut off by the bound
            if raw.strip():
                yield line_number, _parse_line(path, line_number, raw)


def _parse_line(path: PathLike, line_number: int, raw: bytes) -> dict[str, Any] | DataFileError:
    try:
        row = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return DataFileError(path, f"not UTF-8 text (byte {exc.start + 1} of the line)", line_number)
    except json.JSONDecodeError as exc:
        return DataFileError(path, f"invalid JSON ({exc.msg})", line_number)
    if not isinstance(row, dict):
        return DataFileError(path, f"expected a JSON object, got {type(row).__name__}", line_number)
    return row


def iter_jsonl(path: PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for every non-blank line; raise DataFileError naming the
    line when a line is not valid JSON or not a JSON object."""
    for line_number, row in scan_jsonl(path):
        if isinstance(row, DataFileError):
            raise row
        yield line_number, row


def read_json(path: PathLike) -> Any:
    """Parse a whole JSON file."""
    with path.open("r", encoding="utf-8") as fh:
        return json.load(fh)
