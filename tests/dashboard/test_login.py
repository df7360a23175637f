"""Login mode against the real backend: nothing but the sign-in form until a token is accepted.

The API here is `backend.app.create_app` itself (SQLite, a recording launcher) served on a local
port, with personal tokens made the way `aipo token create` makes them. The dashboard process is
given the server's token both in AIPO_API_TOKEN and in $AIPO_HOME/token, to show that login
mode never uses either.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from streamlit import config as streamlit_config
from streamlit.testing.v1 import AppTest

from backend.app import create_app
from backend.db import dispose_engines, get_sessionmaker
from backend.deps import get_launcher
from backend.migrate import upgrade
from backend.settings import Settings
from backend.store.tokens import create_token, revoke_token
from dashboard import api_client, ui
from tests.backend.conftest import RecordingLauncher, run_config, serve
from tests.dashboard.test_pages import APP, button, texts

SERVER_TOKEN = "the-servers-own-token"


@dataclass
class Backend:
    url: str
    database_url: str
    tokens: dict[str, str]  # name -> token
    home: Path


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    home = tmp_path_factory.mktemp("api-home")
    database_url = f"sqlite:///{home / 'aipo.db'}"
    upgrade(database_url)
    app = create_app(
        Settings(home=home, database_url=database_url, api_token=SERVER_TOKEN, allowed_roots=[home])
    )
    app.dependency_overrides[get_launcher] = RecordingLauncher
    tokens = {}
    with get_sessionmaker(database_url)() as session:
        for name, read_only in (("alice", False), ("viewer", True), ("mallory", False)):
            tokens[name] = create_token(session, name, read_only=read_only)[1]
    with serve(app) as url:
        created = httpx.post(
            f"{url}/api/v1/runs",
            json=run_config(name="alices-run"),
            headers={"Authorization": f"Bearer {tokens['alice']}"},
        )
        assert created.status_code == 201, created.text
        yield Backend(url=url, database_url=database_url, tokens=tokens, home=home)
    dispose_engines()


@pytest.fixture
def dashboard_env(backend: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Login mode (the default: AIPO_DASHBOARD_AUTH unset) with the server's token within reach."""
    monkeypatch.delenv("AIPO_DASHBOARD_AUTH", raising=False)
    monkeypatch.setenv("AIPO_API_URL", backend.url)
    monkeypatch.setenv("AIPO_API_TOKEN", SERVER_TOKEN)
    monkeypatch.setenv("AIPO_HOME", str(tmp_path))
    (tmp_path / "token").write_text(SERVER_TOKEN + "\n")
    api_client.clear_cache()
    yield tmp_path
    api_client.clear_cache()


def open_app(page: str | None = None, **query: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params.update(query)
    at.run()
    if page is not None:
        at.switch_page(page)
        at.run()
    return at


def sign_in(at: AppTest, token: str) -> AppTest:
    field = next(t for t in at.text_input if t.label == "API token")
    field.input(token)
    button(at, "Sign in").click()
    return at.run()


def only_the_sign_in_form(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert [t.label for t in at.text_input] == ["API token"]
    assert [b.label for b in at.button] == ["Sign in"]
    assert not at.dataframe and not at.get("plotly_chart")
    assert "Runs" not in [t.value for t in at.title] and "alices-run" not in texts(at)
    assert not at.sidebar.button  # no refresh, no sign-out: nothing of the app


def test_unauthenticated_session_shows_only_the_sign_in_form(dashboard_env: Path) -> None:
    at = open_app()
    only_the_sign_in_form(at)
    assert "aipo token create" in texts(at)
    deep = open_app(ui.RUN_DETAIL_PAGE, run="1")
    only_the_sign_in_form(deep)
    assert "aipo_token" not in deep.session_state


def test_a_bad_token_is_an_error_and_is_not_kept(dashboard_env: Path, backend: Backend) -> None:
    for wrong in ("not-a-token", "aipo_" + "x" * 43, SERVER_TOKEN + "x"):
        at = sign_in(open_app(), wrong)
        assert any("not accepted" in e.value for e in at.error), texts(at)
        only_the_sign_in_form(at)
        assert "aipo_token" not in at.session_state


def test_signed_in_user_sees_runs_with_their_creator_and_can_sign_out(
    dashboard_env: Path, backend: Backend
) -> None:
    at = sign_in(open_app(), backend.tokens["alice"])
    assert not at.exception, [e.value for e in at.exception]
    assert "Runs" in [t.value for t in at.title]
    table = at.dataframe[0].value
    assert list(table["created_by"]) == ["alice"] and list(table["name"]) == ["alices-run"]
    assert "Signed in as **alice** (read & write)" in [c.value for c in at.sidebar.caption]
    assert at.session_state["aipo_token"] == backend.tokens["alice"]
    assert sorted(p.name for p in dashboard_env.iterdir()) == ["token"]  # nothing written beside it

    button(at, "Sign out").click()
    at.run()
    only_the_sign_in_form(at)
    assert "aipo_token" not in at.session_state


def test_read_only_token_cannot_launch_cancel_or_clone(dashboard_env: Path, backend: Backend) -> None:
    at = sign_in(open_app(), backend.tokens["viewer"])
    assert "Signed in as **viewer** (read-only)" in [c.value for c in at.sidebar.caption]
    at.switch_page(ui.RUN_DETAIL_PAGE)
    at.query_params["run"] = "1"
    at.run()
    assert not at.exception
    for label in ("Cancel", "Resume", "Clone"):
        assert button(at, label).disabled, label
    at.switch_page(ui.LAUNCH_PAGE)
    at.run()
    assert ui.READ_ONLY_HELP in texts(at)
    assert not [b for b in at.button if b.label.startswith("Launch")]


def test_a_token_revoked_mid_session_is_told_to_sign_in_again(dashboard_env: Path, backend: Backend) -> None:
    at = sign_in(open_app(), backend.tokens["mallory"])
    assert "Runs" in [t.value for t in at.title]
    with get_sessionmaker(backend.database_url)() as session:
        revoke_token(session, "mallory")
    api_client.clear_cache()
    at.run()
    assert any("no longer accepts your token" in e.value for e in at.error), texts(at)


def test_server_token_mode_is_refused_off_loopback(
    dashboard_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIPO_DASHBOARD_AUTH", "server-token")
    streamlit_config.set_option("server.address", "0.0.0.0")
    at = open_app()
    assert any("server-token is refused" in e.value for e in at.error)
    assert not at.dataframe and not at.text_input
    streamlit_config.set_option("server.address", "127.0.0.1")
    at = open_app()
    assert not at.error and "Runs" in [t.value for t in at.title]  # the server's token, on loopback
