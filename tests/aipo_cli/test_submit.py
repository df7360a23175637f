"""`aipo submit` against a real API process: a local initial_pairs file is uploaded first."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import yaml
from typer.testing import CliRunner

from aipo_cli.main import app
from tests.backend.conftest import run_config
from tests.backend.live_server import live_server

TOKEN = "submit-test-token"


def test_submit_uploads_a_local_pairs_file_and_runs_on_the_servers_copy(tmp_path: Path) -> None:
    pairs = tmp_path / "mine" / "pairs.jsonl"  # outside the server's allowed roots
    pairs.parent.mkdir()
    pairs.write_text(
        "".join(json.dumps({"prompt": f"Q{i}?", "chosen": "yes", "rejected": "no"}) + "\n" for i in range(5))
    )
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(run_config(name="with-pairs", initial_pairs=str(pairs))))
    home = tmp_path / "server-home"
    with live_server({"AIPO_HOME": str(home), "AIPO_API_TOKEN": TOKEN}, tmp_path / "api.log") as server:
        common = ["submit", str(config), "--api", server.url, "--token", TOKEN]
        refused = CliRunner().invoke(app, [*common, "--no-upload-pairs"])
        assert refused.exit_code == 1 and "initial_pairs" in refused.stderr
        result = CliRunner().invoke(app, common)
        assert result.exit_code == 0, result.output
        assert "5 pairs" in result.stderr
        run = json.loads(result.stdout)
        stored = httpx.get(
            f"{server.url}/api/v1/runs/{run['id']}", headers={"Authorization": f"Bearer {TOKEN}"}
        ).json()
    uploaded = Path(stored["config"]["initial_pairs"])
    # In uploads/ of the server's data root (the first allowed root, somewhere under its home).
    assert uploaded.parent.name == "uploads" and uploaded.is_relative_to(home)
    assert uploaded.read_bytes() == pairs.read_bytes()
    assert stored["created_by"] == "operator"
