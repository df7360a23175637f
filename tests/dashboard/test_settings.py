"""Where the dashboard finds the API and its token."""

from dashboard.settings import DEFAULT_API_URL, load_api_settings


def test_defaults_without_environment(tmp_path):
    settings = load_api_settings({"AIPO_HOME": str(tmp_path)})
    assert settings.url == DEFAULT_API_URL == "http://127.0.0.1:8000"
    assert settings.token == ""
    assert str(tmp_path / "token") in settings.token_source


def test_env_token_wins_over_the_token_file(tmp_path):
    (tmp_path / "token").write_text("from-file\n")
    env = {"AIPO_HOME": str(tmp_path), "AIPO_API_TOKEN": " from-env ", "AIPO_API_URL": "http://h:1/ "}
    settings = load_api_settings(env)
    assert (settings.url, settings.token, settings.token_source) == (
        "http://h:1",
        "from-env",
        "AIPO_API_TOKEN",
    )


def test_token_file_of_aipo_home(tmp_path):
    (tmp_path / "token").write_text("abc123\n")
    settings = load_api_settings({"AIPO_HOME": str(tmp_path)})
    assert settings.token == "abc123" and settings.token_source == str(tmp_path / "token")
