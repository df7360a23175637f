"""`aipo submit` against the real API (uvicorn, SQLite): --dry-run creates nothing, a retry after a
timeout reuses the Idempotency-Key and so never creates a second run, and a local initial_pairs
file is uploaded first."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import func, select
from typer.testing import CliRunner

from aipo_cli.api import ApiClient
from aipo_cli.main import app as cli
from aipo_cli.preview import count, parameters
from backend.app import create_app
from backend.db import dispose_engines, get_sessionmaker
from backend.deps import get_launcher
from backend.migrate import upgrade
from backend.store.models import Run
from tests.backend.conftest import TOKEN, RecordingLauncher, make_settings, run_config, serve
from tests.backend.live_server import live_server

UPLOAD_TOKEN = "submit-test-token"


class SlowFirstCreate:
    """Delivers the response to the first POST /runs `delay_s` late: the server has handled it
    completely (run committed, session closed, response handed over as if to the kernel's socket
    buffer), but a client with a shorter timeout sees a timeout, as over a slow network."""

    def __init__(self, app: Any, delay_s: float) -> None:
        self.app, self.delay_s, self.creates = app, delay_s, 0

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        is_create = scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/api/v1/runs"
        self.creates += is_create
        if not is_create or self.creates > 1:
            return await self.app(scope, receive, send)
        buffered: list[dict] = []

        async def buffer(message: dict) -> None:
            buffered.append(message)

        await self.app(scope, receive, buffer)
        await asyncio.sleep(self.delay_s)
        for message in buffered:
            await send(message)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'aipo.db'}"
    upgrade(url)
    yield url
    dispose_engines()


def api_app(db: str, home: Path) -> Any:
    app = create_app(make_settings(home, db))
    launcher = RecordingLauncher()
    app.dependency_overrides[get_launcher] = lambda: launcher
    return app


def run_count(db: str) -> int:
    with get_sessionmaker(db)() as session:
        return session.scalar(select(func.count()).select_from(Run)) or 0


def config_file(tmp_path: Path, **overrides: Any) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run_config(name="cli-run", **overrides)))
    return path


def submit(url: str, *args: str) -> Any:
    # A wide terminal, so rich prints each table row on one line.
    return CliRunner().invoke(cli, ["submit", *args, "--api", url, "--token", TOKEN], env={"COLUMNS": "240"})


def test_dry_run_prints_the_preview_and_creates_nothing(db: str, tmp_path: Path) -> None:
    with serve(api_app(db, tmp_path)) as url:
        result = submit(url, str(config_file(tmp_path, iterations=3)), "--dry-run")
        preview = ApiClient(url, TOKEN).preview_run({**run_config(name="cli-run", iterations=3)})
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "Launch preview (nothing was created)" in out
    assert "3 × 32 × 4 = 384 candidates" in out
    assert f"{preview['generation_tokens']['total']:,}" in out and f"{preview['training_tokens']:,}" in out
    assert "self_instruct → generate → rank → train → evaluate, × 3 iterations = 15 stages" in out
    assert run_count(db) == 0


def test_dry_run_shows_the_servers_refusal(db: str, tmp_path: Path) -> None:
    with serve(api_app(db, tmp_path)) as url:
        result = submit(url, str(config_file(tmp_path, model="/etc")), "--dry-run")
    assert result.exit_code == 2 and "is outside the allowed data roots" in result.output
    assert "Traceback" not in result.output


def test_a_retry_after_a_timeout_returns_the_first_run(db: str, tmp_path: Path) -> None:
    slow = SlowFirstCreate(api_app(db, tmp_path), delay_s=3.0)
    with serve(slow) as url:
        client = ApiClient(url, TOKEN, timeout_s=1.0, retry_wait_s=0.05)
        client.preview_run(run_config())  # warm up: the first validation imports the objectives
        run = client.submit_run(run_config(name="slow"))
        client.close()
    assert slow.creates == 2  # the first attempt timed out and was sent again
    assert run_count(db) == 1 and run["name"] == "slow"


def test_the_same_key_twice_from_the_command_line_is_one_run(db: str, tmp_path: Path) -> None:
    path = config_file(tmp_path)
    with serve(api_app(db, tmp_path)) as url:
        first = submit(url, str(path), "--idempotency-key", "nightly-2025-01-01")
        again = submit(url, str(path), "--idempotency-key", "nightly-2025-01-01")
        fresh = submit(url, str(path))
    assert first.exit_code == again.exit_code == fresh.exit_code == 0, first.output
    assert json.loads(first.output)["id"] == json.loads(again.output)["id"] != json.loads(fresh.output)["id"]
    assert run_count(db) == 2


def test_figures_are_formatted_for_people() -> None:
    assert [parameters(v) for v in (134_515_008, 1_700_000_000, 64_512, 12, None)] == [
        "134.5M",
        "1.7B",
        "64.5K",
        "12",
        "unknown",
    ]
    assert count(81_920) == "81,920" and count(None) == "–"


def test_submit_uploads_a_local_pairs_file_and_runs_on_the_servers_copy(tmp_path: Path) -> None:
    pairs = tmp_path / "mine" / "pairs.jsonl"  # outside the server's allowed roots
    pairs.parent.mkdir()
    pairs.write_text(
        "".join(json.dumps({"prompt": f"Q{i}?", "chosen": "yes", "rejected": "no"}) + "\n" for i in range(5))
    )
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(run_config(name="with-pairs", initial_pairs=str(pairs))))
    home = tmp_path / "server-home"
    with live_server(
        {"AIPO_HOME": str(home), "AIPO_API_TOKEN": UPLOAD_TOKEN}, tmp_path / "api.log"
    ) as server:
        common = ["submit", str(config), "--api", server.url, "--token", UPLOAD_TOKEN]
        refused = CliRunner().invoke(cli, [*common, "--no-upload-pairs"])
        assert refused.exit_code == 2 and "initial_pairs" in refused.stderr
        result = CliRunner().invoke(cli, common)
        assert result.exit_code == 0, result.output
        assert "5 pairs" in result.stderr
        run = json.loads(result.stdout)
        stored = httpx.get(
            f"{server.url}/api/v1/runs/{run['id']}", headers={"Authorization": f"Bearer {UPLOAD_TOKEN}"}
        ).json()
    uploaded = Path(stored["config"]["initial_pairs"])
    # In uploads/ of the server's data root (the first allowed root, somewhere under its home).
    assert uploaded.parent.name == "uploads" and uploaded.is_relative_to(home)
    assert uploaded.read_bytes() == pairs.read_bytes()
    assert stored["created_by"] == "operator"
