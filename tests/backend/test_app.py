"""App-level behaviour: auth on every route, /health, CORS, embedded auto-migration, OpenAPI."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from backend.app import create_app
from backend.auth import token_path
from backend.migrate import current_revision, head_revision
from backend.settings import Settings
from tests.backend.conftest import TOKEN, Api, make_settings


def concrete(path: str) -> str:
    return path.replace("{run_id}", "1").replace("{sweep_id}", "1").replace("{stage_id}", "1")


def test_every_route_but_health_requires_the_token(api: Api) -> None:
    schema = api.client.get("/openapi.json").json()
    anonymous = TestClient(api.client.app)
    checked = 0
    for path, methods in schema["paths"].items():
        for method in methods:
            response = anonymous.request(method, concrete(path))
            if path.endswith("/health"):
                assert response.status_code == 200
            else:
                assert response.status_code == 401, (method, path)
                assert response.headers["www-authenticate"] == "Bearer"
                wrong = anonymous.request(method, concrete(path), headers={"Authorization": "Bearer nope"})
                assert wrong.status_code == 401
            checked += 1
    assert checked >= 17


def test_health(api: Api) -> None:
    assert api.client.get("/api/v1/health").json() == {"status": "ok", "database": "ok"}


def test_embedded_start_migrates_and_creates_token(tmp_path) -> None:
    settings = Settings(home=tmp_path / "aipo")
    assert settings.is_embedded
    with TestClient(create_app(settings)) as client:
        token = token_path(settings.home).read_text().strip()
        assert current_revision(settings.resolved_database_url) == head_revision()
        assert client.get("/api/v1/runs").status_code == 401
        ok = client.get("/api/v1/runs", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200 and ok.json()["total"] == 0


def test_services_mode_does_not_migrate_unless_asked(tmp_path, fresh_postgres_url: str) -> None:
    postgres_url = fresh_postgres_url
    settings = Settings(home=tmp_path, database_url=postgres_url, api_token=TOKEN)
    with TestClient(create_app(settings)):
        assert current_revision(postgres_url) is None
    with TestClient(create_app(settings.model_copy(update={"auto_migrate": True}))):
        assert current_revision(postgres_url) == head_revision()


@pytest.mark.parametrize("origins", [[], ["http://localhost:8501"]])
def test_cors_closed_by_default(tmp_path, origins: list[str]) -> None:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", cors_origins=origins)
    with TestClient(create_app(settings)) as client:
        response = client.options(
            "/api/v1/runs",
            headers={"Origin": "http://localhost:8501", "Access-Control-Request-Method": "GET"},
        )
        allowed = response.headers.get("access-control-allow-origin")
        assert allowed == (origins[0] if origins else None)


def test_openapi_names_models_and_has_examples(api: Api) -> None:
    schema = api.client.get("/openapi.json").json()
    names = set(schema["components"]["schemas"])
    assert {
        "RunCreate",
        "RunPublic",
        "RunList",
        "RunClone",
        "SweepCreate",
        "SweepPublic",
        "MetricIngest",
    } <= names
    assert {"MetricHistory", "PairPage", "EvalSamplePage", "StageList", "IterationList"} <= names
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            ok = operation["responses"].get("200") or operation["responses"].get("201")
            assert ok and ok.get("content"), (method, path)
            for content in ok["content"].values():
                ref = content.get("schema", {}).get("$ref")
                if ref:
                    model = schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]
                    assert model.get("examples"), f"{ref} has no example"
            if "requestBody" in operation:
                content = operation["requestBody"]["content"]
                if "application/json" not in content:  # the upload route: a raw JSONL body
                    assert content["application/x-ndjson"]["example"], (method, path)
                    continue
                ref = content["application/json"]["schema"]["$ref"]
                assert schema["components"]["schemas"][ref.rsplit("/", 1)[-1]].get("examples")
