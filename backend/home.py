"""Owner-only permissions for `$AIPO_HOME`: the database, the token, logs, broker folders, artifacts.

Everything the stack writes belongs to the user who runs it: folders 0700, files 0600 (owner
execute bits are kept). The processes `aipo up` starts run with umask 077 so what they create is
private from the start; `secure_tree` tightens whatever already exists (e.g. a home made by an
older version) and reports each folder or file it had to fix, so the operator learns that it
was readable by others until now.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

PRIVATE_UMASK = 0o077
GROUP_OTHER_BITS = 0o077


def ensure_private_dir(path: Path) -> bool:
    """Create `path` (and parents) as 0700, or drop group/other bits from an existing one.

    Returns True if an existing folder had to be tightened (the caller may warn).
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return _tighten(path)


def _tighten(path: Path) -> bool:
    """Remove group/other permission bits from `path` (not following symlinks); True if changed."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(mode) or not mode & GROUP_OTHER_BITS:
        return False
    try:
        os.chmod(path, stat.S_IMODE(mode) & ~GROUP_OTHER_BITS)
    except PermissionError:  # someone else's file (e.g. on a shared artifact mount): leave it
        log.warning("cannot restrict %s (not ours); it stays readable by others", path)
        return False
    return True


def make_private(path: Path) -> bool:
    """Drop group/other bits from one file or folder if it exists; True if it had to change."""
    return _tighten(path)


def secure_tree(root: Path) -> list[str]:
    """Make `root` 0700 and every folder/file below it owner-only; returns what was fixed.

    Symlinks are not followed. The walk is a stat per entry, cheap next to a server start even
    for thousands of artifact files.
    """
    fixed: list[str] = []
    if ensure_private_dir(root):
        fixed.append(str(root))
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for name in (*dirnames, *filenames):
            if _tighten(base / name):
                fixed.append(str(base / name))
    if fixed:
        shown = ", ".join(fixed[:5]) + (f" and {len(fixed) - 5} more" if len(fixed) > 5 else "")
        log.warning("made %d paths under %s private to their owner (were group/other-readable): %s",
                    len(fixed), root, shown)  # fmt: skip
    return fixed
