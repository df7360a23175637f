"""POST /uploads/pairs: a preference file streamed to the data folder, validated, usable as initial_pairs."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from backend.app import create_app
from backend.deps import get_launcher
from tests.backend.conftest import TOKEN, Api, make_settings, run_config
from tests.backend.live_server import MIB, live_server, peak_rss, raw_post

UPLOAD = "/api/v1/uploads/pairs"
JSONL = {"Content-Type": "application/x-ndjson"}


def rows(n: int, *, pad: int = 0) -> bytes:
    lines = [
        json.dumps(
            {"id": f"p{i}", "prompt": f"Question {i}?" + " " * pad, "chosen": "Good.", "rejected": "Bad."}
        )
        for i in range(n)
    ]
    return ("\n".join(lines) + "\n").encode()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_upload_is_stored_privately_and_usable_as_initial_pairs(api: Api) -> None:
    body = rows(3000, pad=400)  # ~1.3 MB: above the 1 MiB limit of other routes
    assert len(body) > api.settings.max_request_bytes
    response = api.client.post(UPLOAD, content=body, headers=JSONL)
    assert response.status_code == 201, response.text
    stored = response.json()
    path = Path(stored["path"])
    assert (stored["pairs"], stored["bytes"]) == (3000, len(body))
    assert path.parent == api.settings.uploads_dir and path.read_bytes() == body
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    run = api.client.post("/api/v1/runs", json=run_config(initial_pairs=str(path)))
    assert run.status_code == 201, run.text
    assert run.json()["config"]["initial_pairs"] == str(path)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (rows(2) + b'{"prompt": "x", "chosen": "y"}\n', "line 3: missing field 'rejected'"),
        (rows(1) + b"not json\n", "line 2: invalid JSON"),
        (b"", "the body is empty"),
        (b"\n\n", "has no rows"),
        (rows(1) + rows(1), "line 2: id 'p0' already used on line 1"),
    ],
    ids=["missing-field", "bad-json", "empty", "blank", "duplicate-id"],
)
def test_invalid_file_is_422_naming_the_line_and_nothing_is_kept(api: Api, body: bytes, message: str) -> None:
    before = leftovers(api.settings.uploads_dir)
    response = api.client.post(UPLOAD, content=body, headers=JSONL)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["body"] and message in detail["msg"], detail
    assert str(api.settings.uploads_dir) not in detail["msg"]  # no server paths in errors
    assert leftovers(api.settings.uploads_dir) == before


def test_over_the_upload_limit_is_413_and_nothing_is_kept(db_url: str, tmp_path: Path, launcher) -> None:
    settings = make_settings(tmp_path, db_url, max_upload_bytes=64 * 1024)
    app = create_app(settings)
    app.dependency_overrides[get_launcher] = lambda: launcher
    body = rows(400, pad=400)
    assert len(body) > 64 * 1024
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}", **JSONL}) as client:
        declared = client.post(UPLOAD, content=body)

        def chunks() -> Iterator[bytes]:
            for start in range(0, len(body), 8192):
                yield body[start : start + 8192]

        streamed = client.post(UPLOAD, content=chunks())
        assert client.post(UPLOAD, content=rows(10)).status_code == 201
    assert declared.status_code == 413 and streamed.status_code == 413
    assert "65536 bytes" in streamed.json()["detail"]
    assert len(leftovers(settings.uploads_dir)) == 1  # only the small upload


def test_a_large_upload_streams_to_disk_with_bounded_memory(tmp_path: Path) -> None:
    """A 32 MB file through a real server: its resident memory must not grow with the file."""
    env = {"AIPO_HOME": str(tmp_path / "aipo"), "AIPO_API_TOKEN": TOKEN}
    row = rows(1, pad=4000)  # one ~4 KB line; ids keep each line distinct
    total_rows = 32 * MIB // len(row)

    def body() -> Iterator[bytes]:
        for start in range(0, total_rows, 256):
            yield b"".join(
                row.replace(b'"p0"', b'"p%d"' % i) for i in range(start, min(start + 256, total_rows))
            )

    with live_server(env, tmp_path / "uvicorn.log") as server:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        warm = httpx.post(f"{server.url}{UPLOAD}", content=rows(5), headers={**auth, **JSONL})
        assert warm.status_code == 201, warm.text
        with peak_rss(server) as rss:
            response = raw_post(server, UPLOAD, body(), headers=auth, content_length=None, timeout_s=300)
    assert response.status == 201, response
    stored = json.loads(response.body)
    assert stored["pairs"] == total_rows and stored["bytes"] > 30 * MIB
    grew = rss["peak"] - rss["before"]
    assert grew < 24 * MIB, (
        f"the server grew by {grew / MIB:.1f} MiB for a {stored['bytes'] / MIB:.0f} MiB upload"
    )
