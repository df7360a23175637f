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
    assert body["aipo"]["citation"] == "Shen et al. 2024, Eq. 10"
    assert body["aipo"]["gradient_weight_formula"] == "σ(β((1+α)s_ref − s_θ))"
    assert body["aipo"]["scales_reference"] is True and body["rdpo"]["scales_reference"] is False
    assert body["rdpo"]["loss_formula"] == "−logσ(β(s_θ − s_ref) + α(|y_w| − |y_l|))"
    assert body["simpo"]["reward_formula"] == "(β/|y|)·logπθ(y)"
    assert body["ipo"]["gradient_weight_range"] is None
    assert body["dpo"]["gradient_weight_range"] == [0.0, 1.0]


def test_objectives_need_the_token(api: Api) -> None:
    response = api.client.get("/api/v1/objectives", headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401
