"""The access layer: who may call what, decided on the headers before a body byte is read.

Runs on SQLite (embedded) and PostgreSQL (services). Raw ASGI calls count how often the app
asks for the request body, so "refused before reading" is observed, not assumed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest

from backend.app import create_app
from backend.auth import OPERATOR
from backend.settings import Settings
from tests.backend.conftest import TOKEN, Api, client_with, issue_token, make_settings, run_config
from tests.backend.live_server import LiveServer, live_server, peak_rss, raw_post

MIB = 1024 * 1024


def concrete(path: str) -> str:
    return path.replace("{run_id}", "1").replace("{sweep_id}", "1").replace("{stage_id}", "1")


def call_asgi(
    app: Any, method: str, path: str, token: str | None, chunks: list[bytes], **headers: str
) -> dict:
    """One request straight into the ASGI app; returns status, JSON body and body chunks read."""
    sent: list[dict] = []
    pending = list(chunks)
    reads = 0

    async def receive() -> dict:
        nonlocal reads
        reads += 1
        if not pending:
            return {"type": "http.request", "body": b"", "more_body": False}
        chunk = pending.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    async def send(message: dict) -> None:
        sent.append(message)

    raw_headers = [(b"host", b"test"), (b"content-type", b"application/json")]
    if token is not None:
        raw_headers.append((b"authorization", f"Bearer {token}".encode()))
    raw_headers += [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": raw_headers,
        "client": ("127.0.0.1", 1234),
        "server": ("test", 80),
    }
    anyio.run(app, scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    content_type = dict(start.get("headers", [])).get(b"content-type", b"")
    parsed = json.loads(body) if content_type.startswith(b"application/json") else body.decode()
    return {"status": start["status"], "json": parsed, "reads": reads}


def test_unauthenticated_request_is_refused_without_reading_its_body(api: Api) -> None:
    app = api.client.app
    body = [b"x" * 65536] * 32  # 2 MiB of junk that is never parsed
    for token in (None, "wrong", "aipo_not-a-real-token"):
        result = call_asgi(app, "POST", "/api/v1/runs", token, body, content_length=str(2 * MIB))
        assert (result["status"], result["reads"]) == (401, 0), result
        assert result["json"]["detail"] in ("missing bearer token", "invalid or revoked bearer token")


def test_body_over_the_limit_is_413_before_it_is_parsed(api: Api) -> None:
    app = api.client.app
    limit = api.settings.max_request_bytes
    assert limit == MIB  # the default
    declared = call_asgi(app, "POST", "/api/v1/runs", TOKEN, [b"{" * (2 * MIB)], content_length=str(2 * MIB))
    assert (declared["status"], declared["reads"]) == (413, 0)  # Starlette's own "Content Too Large"
    # Chunked (no Content-Length): counted as it streams, refused once the limit is passed.
    chunks = [b" " * 65536] * 64  # 4 MiB
    streamed = call_asgi(app, "POST", "/api/v1/runs", TOKEN, chunks)
    assert streamed["status"] == 413
    assert streamed["reads"] == limit // 65536 + 1  # stopped at the first chunk past the limit
    assert f"larger than {limit} bytes" in streamed["json"]["detail"]
    # Just under the limit is parsed as usual (here: a valid run config padded with spaces).
    config = json.dumps(run_config()).encode()
    padded = config + b" " * (limit - len(config))
    ok = call_asgi(app, "POST", "/api/v1/runs", TOKEN, [padded], content_length=str(len(padded)))
    assert ok["status"] == 201, ok


def test_limit_is_configurable(db_url: str, tmp_path) -> None:
    app = create_app(make_settings(tmp_path, db_url, max_request_bytes=4096))
    result = call_asgi(app, "POST", "/api/v1/runs", TOKEN, [b" " * 2500, b" " * 2500])
    assert result["status"] == 413 and "4096" in result["json"]["detail"]


def test_personal_token_works_until_revoked(api: Api) -> None:
    from backend.db import get_sessionmaker
    from backend.store.tokens import revoke_token

    name, token = issue_token(api)
    client = client_with(api, token)
    assert client.get("/api/v1/me").json() == {"name": name, "scope": "write", "operator": False}
    run = client.post("/api/v1/runs", json=run_config()).json()
    assert run["created_by"] == name
    with get_sessionmaker(api.settings.resolved_database_url)() as session:
        revoke_token(session, name)
    refused = client.get("/api/v1/runs")
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert refused.json()["detail"] == "invalid or revoked bearer token"
    # The name is free again: a new token for the same person (rotation).
    _, rotated = issue_token(api, name)
    assert client_with(api, rotated).get("/api/v1/runs").status_code == 200


def test_read_only_token_reads_but_gets_403_on_every_mutating_route(api: Api) -> None:
    run = api.create_run()
    name, token = issue_token(api, read_only=True)
    reader = client_with(api, token)
    assert reader.get("/api/v1/me").json() == {"name": name, "scope": "read", "operator": False}
    assert reader.get(f"/api/v1/runs/{run['id']}").status_code == 200
    explicit = [
        ("/api/v1/runs", run_config()),
        (f"/api/v1/runs/{run['id']}/cancel", None),
        (f"/api/v1/runs/{run['id']}/resume", None),
        (f"/api/v1/runs/{run['id']}/clone", {"overrides": {}}),
        ("/api/v1/sweeps", {"name": "s", "base_config": run_config(), "grid": {"seed": [1, 2]}}),
    ]
    for path, body in explicit:
        response = reader.post(path, json=body)
        assert response.status_code == 403, (path, response.text)
        assert "read-only" in response.json()["detail"]
    schema = api.client.get("/openapi.json").json()
    mutating = 0
    for path, methods in schema["paths"].items():
        for method in methods:
            if method.upper() in ("POST", "PUT", "PATCH", "DELETE"):
                # An unparseable body: 403 (not 422) shows the refusal comes before parsing.
                response = reader.request(method, concrete(path), content=b"{not json")
                assert response.status_code == 403, (method, path)
                mutating += 1
    assert mutating >= 6
    assert api.client.get(f"/api/v1/runs/{run['id']}").json()["status"] == "queued"  # not cancelled
    assert reader.get("/api/v1/runs", params={"created_by": name}).json()["total"] == 0


def test_runs_and_sweeps_record_their_creator_and_list_filters_by_it(api: Api) -> None:
    name, token = issue_token(api)
    mine = client_with(api, token)
    created = mine.post("/api/v1/runs", json=run_config()).json()
    clone = mine.post(f"/api/v1/runs/{created['id']}/clone", json={"overrides": {}}).json()
    operator_run = api.create_run()
    assert (created["created_by"], clone["created_by"], operator_run["created_by"]) == (name, name, OPERATOR)
    sweep = mine.post(
        "/api/v1/sweeps",
        json={"name": "s", "base_config": run_config(iterations=1), "grid": {"seed": [1, 2]}},
    ).json()
    assert sweep["created_by"] == name and {r["created_by"] for r in sweep["runs"]} == {name}
    assert api.client.get(f"/api/v1/sweeps/{sweep['id']}").json()["created_by"] == name
    listed = api.client.get("/api/v1/runs", params={"created_by": name, "limit": 200}).json()
    assert listed["total"] == 4 and {r["created_by"] for r in listed["items"]} == {name}
    assert {created["id"], clone["id"]} <= {r["id"] for r in listed["items"]}
    by_operator = api.client.get("/api/v1/runs", params={"created_by": OPERATOR, "limit": 200}).json()
    assert operator_run["id"] in {r["id"] for r in by_operator["items"]}
    assert name not in {r["created_by"] for r in by_operator["items"]}
    assert api.client.get("/api/v1/runs", params={"created_by": "nobody"}).json()["total"] == 0


def test_operator_is_the_bootstrap_token(api: Api) -> None:
    assert api.client.get("/api/v1/me").json() == {"name": OPERATOR, "scope": "write", "operator": True}


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
def test_docs_are_public_only_in_embedded_mode(api: Api, path: str) -> None:
    anonymous = client_with(api, None)
    if api.settings.is_embedded:
        assert anonymous.get(path).status_code == 200
        return
    assert anonymous.get(path).status_code == 401
    authorised = api.client.get(path).status_code
    assert authorised == (200 if path == "/openapi.json" else 404)


def test_public_docs_can_be_switched(tmp_path) -> None:
    embedded = Settings(home=tmp_path, api_token=TOKEN, public_docs=False)
    assert not embedded.serves_public_docs
    app = create_app(embedded)
    assert call_asgi(app, "GET", "/docs", None, [])["status"] == 401
    assert call_asgi(app, "GET", "/docs", TOKEN, [])["status"] == 404


# ----------------------------------------------------------------------------- a real server process

LARGE = 200 * MIB


def _junk(total: int, chunk: int = MIB) -> Iterator[bytes]:
    """`total` bytes of valid JSON, {"name": "xxx…"}: a parser would accept it and hold it."""
    head, tail = b'{"name": "', b'"}'
    yield head
    block = b"x" * chunk
    for _ in range((total - len(head) - len(tail)) // chunk):
        yield block
    yield b"x" * ((total - len(head) - len(tail)) % chunk) + tail


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The API in its own process (embedded: SQLite under a fresh home), warmed up."""
    home = tmp_path_factory.mktemp("live")
    env = {"AIPO_HOME": str(home / "aipo"), "AIPO_API_TOKEN": TOKEN}
    with live_server(env, home / "uvicorn.log") as live:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.get(f"{live.url}/api/v1/runs", headers=auth).status_code == 200
        raw_post(live, "/api/v1/runs", [b"{}"], headers={}, content_length=2)  # first-use imports
        yield live


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_200_mb_unauthenticated_post_is_refused_with_bounded_memory(
    server: LiveServer, declared: bool
) -> None:
    with peak_rss(server) as rss:
        response = raw_post(
            server, "/api/v1/runs", _junk(LARGE), headers={}, content_length=LARGE if declared else None
        )
    assert response.status == 401, response
    assert json.loads(response.body)["detail"] == "missing bearer token"
    grew = rss["peak"] - rss["before"]
    assert grew < 8 * MIB, f"the server grew by {grew / MIB:.1f} MiB for a refused request"


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_200_mb_authenticated_post_is_413_with_bounded_memory(server: LiveServer, declared: bool) -> None:
    with peak_rss(server) as rss:
        response = raw_post(
            server,
            "/api/v1/runs",
            _junk(LARGE),
            headers={"Authorization": f"Bearer {TOKEN}"},
            content_length=LARGE if declared else None,
        )
    assert response.status == 413, response
    grew = rss["peak"] - rss["before"]
    assert grew < 8 * MIB, f"the server grew by {grew / MIB:.1f} MiB for a refused request"
