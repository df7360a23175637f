"""Artifact layout, atomic and durable writes, and publication of a stage attempt's outputs.

`{root}/runs/{run_id}/iter_{k}/` holds one iteration's files. Every file or folder is written
under a temporary name and renamed into place, so a reader (or a retried stage) sees either the
complete artifact or nothing: existence means complete.

Existence must survive a power loss too: a rename is durable only once its directory is
fsync'd, and the renamed file's data only once the file itself is. So every writer here fsyncs
the data before the rename and the directory after it; a stage's completion marker is written
(the same way) only after its artifacts, so after a crash a marker never points at an artifact
that is missing or short.

A stage attempt writes into its own scratch folder (`iter_{k}/.attempts/{stage}-{attempt}/`)
and `publish` moves the results into `iter_{k}/`, marker last. Two attempts of one stage thus
never write into the same place, and the caller decides when publishing is allowed (the
worker: only while it still holds the stage's claim).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def run_dir(root: Path | str, run_id: str) -> Path:
    return Path(root) / "runs" / str(run_id)


def iteration_dir(root: Path | str, run_id: str, k: int) -> Path:
    return run_dir(root, run_id) / f"iter_{k}"


ATTEMPTS_DIR = ".attempts"


def stage_marker_name(stage: str) -> str:
    """The completion marker of `stage` (its summary, written last)."""
    return f"stage_{stage}.json"


def scratch_dir(root: Path | str, run_id: str, k: int, stage: str, attempt: int | str) -> Path:
    """The private output folder of one attempt of one stage of iteration `k`."""
    return iteration_dir(root, run_id, k) / ATTEMPTS_DIR / f"{stage}-{attempt}"


def earlier_scratch_dirs(root: Path | str, run_id: str, k: int, stage: str, attempt: int) -> list[Path]:
    """Scratch folders that attempts of `stage` before `attempt` left behind (a killed worker's)."""
    folder = iteration_dir(root, run_id, k) / ATTEMPTS_DIR
    found = []
    for path in folder.glob(f"{stage}-*"):
        number = path.name.removeprefix(f"{stage}-")
        if number.isdigit() and int(number) < attempt:
            found.append(path)
    return sorted(found)


def fsync_dir(path: Path | str) -> None:
    """Make the entries of directory `path` (creations, renames, removals) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path | str) -> None:
    """fsync every file under `path`, then every directory bottom-up (`path` itself last)."""
    path = Path(path)
    if not path.is_dir():
        _fsync_file(path)
        return
    for folder, _dirs, files in os.walk(path, topdown=False):
        for name in files:
            _fsync_file(Path(folder, name))
        fsync_dir(folder)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_jsonl_atomic(path: Path | str, records: Iterable[dict[str, Any]]) -> Path:
    """Write one JSON object per line to `path` via a temp file + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for record in records:
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def write_json_atomic(path: Path | str, value: Any) -> Path:
    """Write `value` as JSON to `path` via a temp file + rename, durably (see the module doc)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(value, fh, ensure_ascii=False, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def read_jsonl(path: Path | str) -> list[dict[str, Any]]:
    """All records of a JSONL file; a malformed line raises with its line number."""
    records = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None
    return records


def read_json(path: Path | str) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


@contextmanager
def atomic_dir(path: Path | str) -> Iterator[Path]:
    """Yield a temp folder beside `path`; on success it replaces `path`, on error it is removed.

    Everything written into the folder is fsync'd before the rename, the parent after it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield staging
        fsync_tree(staging)
        _replace(staging, path)
        fsync_dir(path.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _replace(source: Path, target: Path) -> None:
    """Rename `source` to `target`, replacing it (a folder too: moved aside, then removed)."""
    if target.is_dir() and not target.is_symlink():
        trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
        os.replace(target, trash / target.name)
        os.rename(source, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(source, target)


def publish(scratch: Path | str, target: Path | str, *, marker: str) -> list[str]:
    """Move every entry of `scratch` into `target` (replacing), then `marker` last; returns the names.

    Each entry is renamed as a whole, so a reader sees an old or a new artifact, never a mix;
    a crash part-way leaves no marker, and the stage runs again. The data is fsync'd before the
    renames and `target` after them and again after the marker. A scratch folder without a
    marker (the stage found its outputs already published) publishes what it has and no marker;
    a missing one publishes nothing.
    """
    scratch, target = Path(scratch), Path(target)
    if not scratch.is_dir():
        return []
    target.mkdir(parents=True, exist_ok=True)
    names = sorted(entry.name for entry in scratch.iterdir() if entry.name != marker)
    fsync_tree(scratch)
    for name in names:
        _replace(scratch / name, target / name)
    fsync_dir(target)
    if (scratch / marker).exists():
        os.replace(scratch / marker, target / marker)
        fsync_dir(target)
        names.append(marker)
    return names


def discard_scratch(scratch: Path | str) -> None:
    """Remove an attempt's scratch folder, and the `.attempts` folder once it is empty."""
    scratch = Path(scratch)
    shutil.rmtree(scratch, ignore_errors=True)
    if scratch.parent.name != ATTEMPTS_DIR:
        return
    try:
        scratch.parent.rmdir()
    except OSError:  # other attempts' folders are still there (or it is already gone)
        pass


def is_complete(path: Path | str) -> bool:
    """Complete artifacts exist only after their rename, so existence is completeness."""
    return Path(path).exists()
