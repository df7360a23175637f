"""Fixtures for dashboard tests: the real API seeded with a few runs on a random local port, or
no API at all (tests/dashboard/seeded_backend.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from streamlit import config as streamlit_config

from dashboard import api_client
from tests.backend.live_server import free_port
from tests.dashboard.seeded_backend import SeededApi, migrated_database, serve_seeded

TOKEN = "not-the-api-token"  # for the API that is down


@pytest.fixture(autouse=True)
def loopback_dashboard() -> Iterator[None]:
    """AppTest runs the app as a dashboard listening on 127.0.0.1 (what `aipo up` starts), so the
    server-token mode these tests use is allowed."""
    before = streamlit_config.get_option("server.address")
    streamlit_config.set_option("server.address", "127.0.0.1")
    yield
    streamlit_config.set_option("server.address", before)


@pytest.fixture(scope="session")
def seeded_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seeded database, built once; each test serves its own copy."""
    return migrated_database(tmp_path_factory.mktemp("seeded"))


@pytest.fixture(scope="session")
def empty_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_database(tmp_path_factory.mktemp("empty"), seeded=False)


def _point_dashboard_at(monkeypatch: pytest.MonkeyPatch, url: str, token: str, home: Path) -> None:
    monkeypatch.setenv("AIPO_API_URL", url)
    monkeypatch.setenv("AIPO_DASHBOARD_AUTH", "server-token")
    monkeypatch.setenv("AIPO_API_TOKEN", token)
    monkeypatch.setenv("AIPO_HOME", str(home))
    api_client.clear_cache()


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, seeded_template: Path) -> Iterator[SeededApi]:
    """The real API over a fresh copy of the seeded data, and the dashboard's env pointing at it."""
    with serve_seeded(seeded_template, tmp_path / "server") as api:
        _point_dashboard_at(monkeypatch, api.url, api.token, tmp_path)
        yield api
    api_client.clear_cache()


@pytest.fixture
def empty_backend(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, empty_template: Path
) -> Iterator[SeededApi]:
    """The real API over an empty database (no runs yet)."""
    with serve_seeded(empty_template, tmp_path / "server") as api:
        _point_dashboard_at(monkeypatch, api.url, api.token, tmp_path)
        yield api
    api_client.clear_cache()


@pytest.fixture
def api_down(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """The dashboard's env pointing at a local port nothing listens on."""
    url = f"http://127.0.0.1:{free_port()}"
    _point_dashboard_at(monkeypatch, url, TOKEN, tmp_path)
    return url


@pytest.fixture
def sent_requests() -> Iterator[list[httpx.Request]]:
    """Every HTTP request the dashboard sends while the test runs, seen at api_client's transport."""
    sent: list[httpx.Request] = []
    hooks = api_client.http_client().event_hooks
    hooks["request"] = [*hooks["request"], sent.append]
    yield sent
    hooks["request"] = [hook for hook in hooks["request"] if hook != sent.append]
