"""Objectives against hand-computed values, the AIPO gradient identity (Eq. 7–8) and properties."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from aipo_core.config import ObjectiveConfig
from aipo_core.objectives import OBJECTIVES, ObjectiveError, pair_loss


def softplus(x: float) -> float:
    """−logσ(−x) = log(1 + eˣ), written out by hand."""
    return math.log1p(math.exp(x))


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# One pair: logπθ(y_w)=−10, logπθ(y_l)=−12, logπref(y_w)=−9, logπref(y_l)=−12, |y_w|=5, |y_l|=4.
# So s_θ = 2 and s_ref = 3.
PAIR = dict(
    policy_chosen_logps=t(-10.0),
    policy_rejected_logps=t(-12.0),
    ref_chosen_logps=t(-9.0),
    ref_rejected_logps=t(-12.0),
    chosen_lengths=t(5.0),
    rejected_lengths=t(4.0),
)


@pytest.mark.parametrize(
    ("name", "hparams", "expected"),
    [
        # −logσ(β(s_θ − s_ref)) = softplus(−0.1·(2 − 3))
        ("dpo", {"beta": 0.1}, softplus(0.1)),
        # dpo + λ·(10/5)
        ("dpo_nll", {"beta": 0.1, "lambda_": 0.4}, softplus(0.1) + 0.4 * 2.0),
        # −logσ(2·(−10/5) − 2·(−12/4) − 0.5) = softplus(−(−4 + 6 − 0.5))
        ("simpo", {"beta": 2.0, "gamma": 0.5}, softplus(-1.5)),
        # −logσ(0.1·(2 − 1.05·3)) = softplus(0.115)
        ("alpha_dpo", {"beta": 0.1, "alpha": 0.05}, softplus(0.115)),
        ("aipo", {"beta": 0.1, "alpha": 0.05, "lambda_": 0.2}, softplus(0.115) + 0.2 * 2.0),
        # (s_θ − s_ref − 1/(2β))² = (2 − 3 − 5)²
        ("ipo", {"beta": 0.1}, 36.0),
        # −logσ(0.1·(2 − 3) − 0.01·(5 − 4)) = softplus(0.11)
        ("rdpo", {"beta": 0.1, "alpha": 0.01}, softplus(0.11)),
    ],
)
def test_loss_matches_hand_computed_value(name, hparams, expected):
    losses, _ = pair_loss(name, **PAIR, **hparams)
    assert losses.shape == (1,)
    assert losses.item() == pytest.approx(expected, rel=1e-12)


def test_metrics_hand_computed():
    _, m = pair_loss("aipo", **PAIR, beta=0.1, alpha=0.05, lambda_=0.2)
    assert m["rewards_chosen"].item() == pytest.approx(0.1 * (-10 + 9))
    assert m["rewards_rejected"].item() == pytest.approx(0.0)
    assert m["margins"].item() == pytest.approx(-0.1)
    assert m["accuracy"].item() == 0.0
    assert m["s_ref"].item() == pytest.approx(3.0)
    assert m["s_theta"].item() == pytest.approx(2.0)
    # Eq. 8: w = σ(β((1+α)s_ref − s_θ)) = σ(0.1·(3.15 − 2))
    assert m["gradient_weight"].item() == pytest.approx(1 / (1 + math.exp(-0.115)))
    assert m["nll"].item() == pytest.approx(2.0)
    assert set(m) >= {"loss", "rewards_chosen", "rewards_rejected", "margins", "s_ref", "gradient_weight"}


def test_rdpo_gradient_weight_ignores_its_length_alpha():
    _, m = pair_loss("rdpo", **PAIR, beta=0.1, alpha=0.01)
    assert m["gradient_weight"].item() == pytest.approx(1 / (1 + math.exp(-0.1)))


def test_aipo_with_zero_alpha_and_lambda_equals_dpo():
    torch.manual_seed(0)
    batch = {k: torch.randn(16, dtype=torch.float64) * 20 - 50 for k in list(PAIR)[:4]}
    batch |= {
        "chosen_lengths": torch.randint(1, 100, (16,)).double(),
        "rejected_lengths": torch.full((16,), 7.0),
    }
    aipo_losses, _ = pair_loss("aipo", **batch, beta=0.3, alpha=0.0, lambda_=0.0)
    dpo_losses, _ = pair_loss("dpo", **batch, beta=0.3)
    torch.testing.assert_close(aipo_losses, dpo_losses, rtol=0, atol=0)


def test_alpha_dpo_gradient_is_weighted_margin_gradient():
    """Eq. 7–8: ∇L = −β·w·(∇logπ(y_w) − ∇logπ(y_l)), w = σ(β((1+α)s_ref − s_θ)).

    The policy log-probs are functions of a parameter vector θ, so the identity is checked on
    ∂L/∂θ, not only on ∂L/∂logπ.
    """
    torch.manual_seed(1)
    theta = torch.randn(6, dtype=torch.float64, requires_grad=True)
    feats_w, feats_l = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    logp_w = -torch.nn.functional.softplus(feats_w @ theta)  # [4], differentiable log-probs
    logp_l = -torch.nn.functional.softplus(feats_l @ theta)  # [4]
    ref_w, ref_l = torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    beta, alpha = 0.5, 0.07
    losses, metrics = pair_loss(
        "alpha_dpo",
        policy_chosen_logps=logp_w,
        policy_rejected_logps=logp_l,
        ref_chosen_logps=ref_w,
        ref_rejected_logps=ref_l,
        chosen_lengths=t(3, 3, 3, 3),
        rejected_lengths=t(3, 3, 3, 3),
        beta=beta,
        alpha=alpha,
    )
    (grad,) = torch.autograd.grad(losses.sum(), theta, retain_graph=True)
    w = metrics["gradient_weight"]  # [4]
    grad_w = torch.stack([torch.autograd.grad(lw, theta, retain_graph=True)[0] for lw in logp_w])  # [4, 6]
    grad_l = torch.stack([torch.autograd.grad(ll, theta, retain_graph=True)[0] for ll in logp_l])  # [4, 6]
    expected = (-beta * w[:, None] * (grad_w - grad_l)).sum(0)  # [6]
    torch.testing.assert_close(grad, expected)


def test_unknown_objective_lists_valid_names():
    with pytest.raises(ObjectiveError, match="valid names: aipo, alpha_dpo, dpo"):
        pair_loss("dpp", **PAIR, beta=0.1)


def test_unused_hyperparameter_is_an_error():
    with pytest.raises(ObjectiveError, match="alpha: objective 'dpo' does not use it"):
        pair_loss("dpo", **PAIR, beta=0.1, alpha=0.05)


@pytest.mark.parametrize(
    ("hparams", "message"),
    [({"beta": 0.0}, "beta: must be > 0"), ({"beta": 0.1, "alpha": -0.1}, "alpha: must be >= 0")],
)
def test_bad_values_name_the_field(hparams, message):
    with pytest.raises(ObjectiveError, match=message):
        pair_loss("alpha_dpo", **PAIR, **hparams)


def test_objective_config_validates_against_registry():
    assert ObjectiveConfig(name="aipo", alpha=0.03).resolved() == {"beta": 0.1, "alpha": 0.03, "lambda_": 0.2}
    with pytest.raises(ValueError, match="gamma: objective 'dpo' does not use it"):
        ObjectiveConfig(name="dpo", gamma=1.0)
    with pytest.raises(ValueError, match="lambda_: must be >= 0"):
        ObjectiveConfig(name="aipo", lambda_=-1.0)


def test_registry_entries_cite_a_paper_and_equation():
    for spec in OBJECTIVES.values():
        assert "Eq." in spec.citation and "Eq." in (spec.fn.__doc__ or ""), spec.name
        assert set(spec.defaults) == set(spec.hyperparameters), spec.name


EXTREME = st.floats(min_value=-1e4, max_value=0.0, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(
    name=st.sampled_from(sorted(OBJECTIVES)),
    pc=EXTREME,
    pr=EXTREME,
    rc=EXTREME,
    rr=EXTREME,
    lw=st.integers(1, 4096),
    ll=st.integers(1, 4096),
)
def test_losses_and_gradients_are_finite_on_extreme_logps(name, pc, pr, rc, rr, lw, ll):
    policy = torch.tensor([pc, pr], dtype=torch.float32, requires_grad=True)
    losses, metrics = pair_loss(
        name,
        policy_chosen_logps=policy[:1],
        policy_rejected_logps=policy[1:],
        ref_chosen_logps=torch.tensor([rc]),
        ref_rejected_logps=torch.tensor([rr]),
        chosen_lengths=torch.tensor([float(lw)]),
        rejected_lengths=torch.tensor([float(ll)]),
        **OBJECTIVES[name].defaults,
    )
    losses.sum().backward()
    assert torch.isfinite(losses).all()
    assert torch.isfinite(policy.grad).all()
    assert all(torch.isfinite(v).all() for v in metrics.values())


@settings(max_examples=200, deadline=None)
@given(
    name=st.sampled_from(sorted(OBJECTIVES)),
    pc=st.floats(-1e3, 0.0),
    pr=st.floats(-1e3, 0.0),
    delta=st.floats(0.01, 10.0),
)
def test_raising_chosen_logp_never_raises_the_preference_loss(name, pc, pr, delta):
    """Every objective prefers a more likely chosen response (IPO only below its target margin)."""
    if name == "ipo":
        pr = pc + 10.0  # s_θ − s_ref stays ≤ 0 < 1/(2β), where IPO's square still decreases
    kwargs = dict(
        policy_rejected_logps=torch.tensor([pr], dtype=torch.float64),
        ref_chosen_logps=torch.tensor([-5.0], dtype=torch.float64),
        ref_rejected_logps=torch.tensor([-5.0], dtype=torch.float64),
        chosen_lengths=torch.tensor([10.0], dtype=torch.float64),
        rejected_lengths=torch.tensor([10.0], dtype=torch.float64),
        **OBJECTIVES[name].defaults,
    )
    low, _ = pair_loss(name, policy_chosen_logps=torch.tensor([pc], dtype=torch.float64), **kwargs)
    high, _ = pair_loss(name, policy_chosen_logps=torch.tensor([pc + delta], dtype=torch.float64), **kwargs)
    assert high.item() <= low.item() + 1e-12
