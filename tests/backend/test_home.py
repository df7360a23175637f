"""$AIPO_HOME and what is in it belong to their owner alone: folders 0700, files 0600."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from fastapi.testclient import TestClient

from backend.app import create_app
from backend.home import ensure_private_dir, secure_tree
from backend.settings import Settings


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_secure_tree_tightens_an_old_world_readable_home(tmp_path: Path, caplog) -> None:
    home = tmp_path / "aipo"
    (home / "runs" / "1" / "iter_0").mkdir(parents=True)
    (home / "logs").mkdir()
    files = [home / "aipo.db", home / "logs" / "api.log", home / "runs" / "1" / "iter_0" / "pairs.jsonl"]
    for path in files:
        path.write_text("x")
        path.chmod(0o644)
    script = home / "runs" / "1" / "run.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    for folder in (home, home / "runs", home / "runs" / "1", home / "runs" / "1" / "iter_0", home / "logs"):
        folder.chmod(0o755)
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("not ours to change")
    outside.chmod(0o644)
    (home / "link").symlink_to(outside)

    with caplog.at_level(logging.WARNING, logger="backend.home"):
        fixed = secure_tree(home)
    assert len(fixed) == 9 and "group/other-readable" in caplog.text
    assert mode(home) == 0o700 and mode(home / "runs" / "1" / "iter_0") == 0o700
    assert all(mode(path) == 0o600 for path in files)
    assert mode(script) == 0o700  # the owner keeps its execute bit
    assert mode(outside) == 0o644  # symlinks are not followed
    assert secure_tree(home) == []


def test_new_private_dir_is_0700_even_under_a_loose_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        ensure_private_dir(tmp_path / "a" / "home")
    finally:
        os.umask(old)
    assert mode(tmp_path / "a" / "home") == 0o700


def test_embedded_api_start_leaves_home_database_and_token_owner_only(tmp_path: Path) -> None:
    home = tmp_path / "aipo"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    old = os.umask(0o022)  # what a login shell usually has
    try:
        with TestClient(create_app(Settings(home=home))) as client:
            token = (home / "token").read_text().strip()
            runs = client.get("/api/v1/runs", headers={"Authorization": f"Bearer {token}"})
            assert runs.status_code == 200
    finally:
        os.umask(old)
    assert mode(home) == 0o700
    assert mode(home / "token") == 0o600
    assert mode(home / "aipo.db") == 0o600
    for sidecar in ("aipo.db-wal", "aipo.db-shm"):
        if (home / sidecar).exists():
            assert mode(home / sidecar) == 0o600
