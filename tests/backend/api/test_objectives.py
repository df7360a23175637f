"""GET /objectives serves the registry itself, behind the token."""

from __future__ import annotations

from aipo_core.objectives import OBJECTIVES
from tests.backend.conftest import Api


def test_objectives_mirror_the_registry(api: Api) -> None:
    response = api.client.get("/api/v1/objectives")
    assert response.status_code == 200
    body = {o["name"]: o for o in response.json()}
    assert set(body) == set(OBJECTIVES)
    assert body["aipo"]["defaults"] == {"beta": 0.1, "alpha": 0.05, "lambda_": 0.2}
    assert body["simpo"]["hyperparameters"] == ["beta", "gamma"]
    assert "Eq." in body["ipo"]["citation"]


def test_objectives_need_the_token(api: Api) -> None:
    response = api.client.get("/api/v1/objectives", headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401
