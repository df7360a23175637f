"""Fixtures for dashboard tests: a stand-in API on a random local port, or no API at all."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from streamlit import config as streamlit_config

from dashboard import api_client
from tests.dashboard.stand_in_api import StandInData, canned_data, create_app, free_port, serve

TOKEN = "stand-in-token"


@pytest.fixture(autouse=True)
def loopback_dashboard() -> Iterator[None]:
    """AppTest runs the app as a dashboard listening on 127.0.0.1 (what `aipo up` starts), so the
    server-token mode these tests use is allowed."""
    before = streamlit_config.get_option("server.address")
    streamlit_config.set_option("server.address", "127.0.0.1")
    yield
    streamlit_config.set_option("server.address", before)


@dataclass
class StandIn:
    url: str
    token: str
    data: StandInData


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[StandIn]:
    """The stand-in API with canned data, and the dashboard's env pointing at it."""
    data = canned_data()
    with serve(create_app(TOKEN, data)) as url:
        monkeypatch.setenv("AIPO_API_URL", url)
        monkeypatch.setenv("AIPO_DASHBOARD_AUTH", "server-token")
        monkeypatch.setenv("AIPO_API_TOKEN", TOKEN)
        monkeypatch.setenv("AIPO_HOME", str(tmp_path))
        api_client.clear_cache()
        yield StandIn(url=url, token=TOKEN, data=data)
    api_client.clear_cache()


@pytest.fixture
def api_down(monkeypatch: pytest.MonkeyPatch, tmp_path) -> str:
    """The dashboard's env pointing at a local port nothing listens on."""
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AIPO_API_URL", url)
    monkeypatch.setenv("AIPO_DASHBOARD_AUTH", "server-token")
    monkeypatch.setenv("AIPO_API_TOKEN", TOKEN)
    monkeypatch.setenv("AIPO_HOME", str(tmp_path))
    api_client.clear_cache()
    return url
