"""Where the dashboard finds the API and its token."""

from dashboard.settings import DEFAULT_API_URL, LOGIN, SERVER_TOKEN, auth_mode, is_loopback, load_api_settings

SERVER = {"AIPO_DASHBOARD_AUTH": "server-token"}


def test_defaults_without_environment(tmp_path):
    settings = load_api_settings({"AIPO_HOME": str(tmp_path), **SERVER})
    assert settings.url == DEFAULT_API_URL == "http://127.0.0.1:8000"
    assert settings.token == ""
    assert str(tmp_path / "token") in settings.token_source


def test_env_token_wins_over_the_token_file(tmp_path):
    (tmp_path / "token").write_text("from-file\n")
    env = {
        "AIPO_HOME": str(tmp_path),
        "AIPO_API_TOKEN": " from-env ",
        "AIPO_API_URL": "http://h:1/ ",
        **SERVER,
    }
    settings = load_api_settings(env)
    assert (settings.url, settings.token, settings.token_source) == (
        "http://h:1",
        "from-env",
        "AIPO_API_TOKEN",
    )


def test_token_file_of_aipo_home(tmp_path):
    (tmp_path / "token").write_text("abc123\n")
    settings = load_api_settings({"AIPO_HOME": str(tmp_path), **SERVER})
    assert settings.token == "abc123" and settings.token_source == str(tmp_path / "token")


def test_login_is_the_default_and_never_reads_the_servers_token(tmp_path):
    (tmp_path / "token").write_text("server-secret\n")
    for mode in (None, "", "login", "LOGIN", "sever-token", "anything"):
        env = {"AIPO_HOME": str(tmp_path), "AIPO_API_TOKEN": "env-secret"}
        if mode is not None:
            env["AIPO_DASHBOARD_AUTH"] = mode
        assert auth_mode(env) == LOGIN
        settings = load_api_settings(env)
        assert settings.token == "" and "secret" not in repr(settings)
    assert auth_mode({"AIPO_DASHBOARD_AUTH": " Server-Token "}) == SERVER_TOKEN


def test_loopback_addresses():
    assert all(is_loopback(a) for a in ("127.0.0.1", "localhost", "::1"))
    assert not any(is_loopback(a) for a in ("0.0.0.0", "", None, "10.0.0.5", "::"))
