"""Objectives against hand-computed values, the AIPO gradient identity (Eq. 7–8) and properties."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from aipo_core.config import ObjectiveConfig
from aipo_core.objectives import OBJECTIVES, ObjectiveError, PairBatch, pair_loss


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
        # Park et al. Eq. 9: −logσ(0.1·(2 − 3) + 0.01·(5 − 4)) = −logσ(−0.09) = softplus(0.09)
        ("rdpo", {"beta": 0.1, "alpha": 0.01}, softplus(0.09)),
    ],
)
def test_loss_matches_hand_computed_value(name, hparams, expected):
    losses, _ = pair_loss(name, **PAIR, **hparams)
    assert losses.shape == (1,)
    assert losses.item() == pytest.approx(expected, rel=1e-12)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# Per objective on PAIR: (hyperparameters, r(y_w), r(y_l), gradient weight), all by hand.
HAND_METRICS = {
    # r = β·log(π/π_ref): 0.1·(−10 + 9) and 0.1·(−12 + 12); w = σ(β(s_ref − s_θ)) = σ(0.1)
    "dpo": ({"beta": 0.1}, -0.1, 0.0, sigmoid(0.1)),
    "dpo_nll": ({"beta": 0.1, "lambda_": 0.4}, -0.1, 0.0, sigmoid(0.1)),
    # r = (β/|y|)·logπ: 2·(−10/5) and 2·(−12/4); w = σ(γ − m) = σ(0.5 − 2)
    "simpo": ({"beta": 2.0, "gamma": 0.5}, -4.0, -6.0, sigmoid(-1.5)),
    # r = β(logπ − 1.05·logπ_ref): 0.1·(−10 + 9.45) and 0.1·(−12 + 12.6); w = σ(0.1·(3.15 − 2))
    "alpha_dpo": ({"beta": 0.1, "alpha": 0.05}, -0.055, 0.06, sigmoid(0.115)),
    "aipo": ({"beta": 0.1, "alpha": 0.05, "lambda_": 0.2}, -0.055, 0.06, sigmoid(0.115)),
    # DPO's reward; w = 1 − 2m with m = −0.1
    "ipo": ({"beta": 0.1}, -0.1, 0.0, 1.2),
    # r = β·log(π/π_ref) + α|y|: −0.1 + 0.01·5 and 0 + 0.01·4; w = σ(−m) = σ(0.09)
    "rdpo": ({"beta": 0.1, "alpha": 0.01}, -0.05, 0.04, sigmoid(0.09)),
}


@pytest.mark.parametrize("name", sorted(HAND_METRICS))
def test_rewards_margins_accuracy_and_weight_hand_computed(name):
    hparams, chosen, rejected, weight = HAND_METRICS[name]
    _, m = pair_loss(name, **PAIR, **hparams)
    assert m["rewards_chosen"].item() == pytest.approx(chosen, abs=1e-12)
    assert m["rewards_rejected"].item() == pytest.approx(rejected, abs=1e-12)
    assert m["margins"].item() == pytest.approx(chosen - rejected, abs=1e-12)
    assert m["accuracy"].item() == float(chosen > rejected)
    assert m["gradient_weight"].item() == pytest.approx(weight, rel=1e-12)
    assert m["s_ref"].item() == pytest.approx(3.0)
    assert m["s_theta"].item() == pytest.approx(2.0)
    assert m["nll"].item() == pytest.approx(2.0)


def test_hand_table_covers_every_objective():
    assert set(HAND_METRICS) == set(OBJECTIVES)


def _length_pair(chosen_length: float, rejected_length: float, policy_chosen: torch.Tensor) -> dict:
    """s_θ = s_ref = 0.5 (log-ratio margin 0) with the given token lengths."""
    return dict(
        policy_chosen_logps=policy_chosen,
        policy_rejected_logps=t(-20.5),
        ref_chosen_logps=t(-20.0),
        ref_rejected_logps=t(-20.5),
        chosen_lengths=t(chosen_length),
        rejected_lengths=t(rejected_length),
    )


@pytest.mark.parametrize(("chosen_length", "rejected_length"), [(60.0, 20.0), (20.0, 60.0)])
def test_rdpo_length_term_reduces_the_pull_toward_a_longer_chosen_response(chosen_length, rejected_length):
    """Park et al. Eq. 9: for the same log-ratio margin, a longer y_w gets a smaller push than DPO
    gives it (loss and weight both smaller), a shorter y_w a larger one."""
    pulls = {}
    for name, hparams in (("dpo", {"beta": 0.1}), ("rdpo", {"beta": 0.1, "alpha": 0.01})):
        chosen = t(-20.0).requires_grad_(True)
        losses, metrics = pair_loss(name, **_length_pair(chosen_length, rejected_length, chosen), **hparams)
        (grad,) = torch.autograd.grad(losses.sum(), chosen)
        pulls[name] = (losses.item(), metrics["gradient_weight"].item(), -grad.item())
    # By hand: DPO σ(0) = 0.5 everywhere; R-DPO σ(∓0.4) for a length gap of ±40 tokens.
    gap = chosen_length - rejected_length
    assert pulls["dpo"][1] == pytest.approx(0.5)
    assert pulls["rdpo"][1] == pytest.approx(sigmoid(-0.01 * gap))
    assert pulls["rdpo"][0] == pytest.approx(softplus(-0.01 * gap))
    assert pulls["rdpo"][2] == pytest.approx(0.1 * sigmoid(-0.01 * gap))  # −∂ℓ/∂logπ(y_w) = β·w
    longer = gap > 0
    assert all((pulls["rdpo"][i] < pulls["dpo"][i]) == longer for i in range(3))


# c: the constant prefactor of each loss written in its reward margin m (module doc of objectives).
LOSS_SCALE = {"ipo": lambda hp: 1.0 / hp["beta"] ** 2}


def _random_batch(seed: int, n: int = 5) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logps = -torch.rand(4, n, generator=generator, dtype=torch.float64) * 40  # [4, n]
    lengths = torch.randint(1, 60, (2, n), generator=generator).double()  # [2, n]
    return dict(
        policy_chosen_logps=logps[0],
        policy_rejected_logps=logps[1],
        ref_chosen_logps=logps[2],
        ref_rejected_logps=logps[3],
        chosen_lengths=lengths[0],
        rejected_lengths=lengths[1],
    )


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_declared_gradient_weight_matches_autograd(name):
    """w = −(1/c)·∂ℓ/∂m: checked on ∂ℓ/∂logπθ(y) by autograd through the loss, the reward margin m
    and the NLL term (only on y_w, where λ/|y_w| is added back by hand)."""
    spec = OBJECTIVES[name]
    hp = {**spec.defaults}
    batch = _random_batch(seed=3)
    policy = torch.stack([batch["policy_chosen_logps"], batch["policy_rejected_logps"]]).requires_grad_(True)
    inputs = batch | {"policy_chosen_logps": policy[0], "policy_rejected_logps": policy[1]}
    losses, metrics = pair_loss(name, **inputs, **hp)
    (grad_loss,) = torch.autograd.grad(losses.sum(), policy)  # [2, n]
    chosen_r, rejected_r = spec.reward(PairBatch(**inputs), **hp)
    (grad_margin,) = torch.autograd.grad((chosen_r - rejected_r).sum(), policy)  # [2, n]
    c = LOSS_SCALE.get(name, lambda _: 1.0)(hp)
    nll_grad = torch.stack(
        [-hp.get("lambda_", 0.0) / batch["chosen_lengths"], torch.zeros_like(batch["chosen_lengths"])]
    )  # [2, n]: ∂(λ·(−logπ(y_w)/|y_w|))/∂logπ
    expected = -c * metrics["gradient_weight"] * grad_margin + nll_grad
    torch.testing.assert_close(grad_loss, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_gradient_is_weighted_margin_gradient_in_parameters(name):
    """AIPO paper Eq. 7–8 (for alpha_dpo: ∇L = −β·w·(∇logπ(y_w) − ∇logπ(y_l)), w = σ(β((1+α)s_ref − s_θ))),
    generalised to every objective: ∇θL = Σ −c·w·∇θm + λ∇θ nll.

    The policy log-probs are functions of a parameter vector θ, so the identity is checked on
    ∂L/∂θ, not only on ∂L/∂logπ.
    """
    spec = OBJECTIVES[name]
    hp = dict(spec.defaults)
    torch.manual_seed(1)
    theta = torch.randn(6, dtype=torch.float64, requires_grad=True)
    feats_w, feats_l = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    logp_w = -torch.nn.functional.softplus(feats_w @ theta) * 8  # [4], differentiable log-probs
    logp_l = -torch.nn.functional.softplus(feats_l @ theta) * 8  # [4]
    inputs = dict(
        policy_chosen_logps=logp_w,
        policy_rejected_logps=logp_l,
        ref_chosen_logps=torch.randn(4, dtype=torch.float64) - 8,
        ref_rejected_logps=torch.randn(4, dtype=torch.float64) - 8,
        chosen_lengths=t(3, 7, 2, 5),
        rejected_lengths=t(4, 3, 6, 5),
    )
    losses, metrics = pair_loss(name, **inputs, **hp)
    (grad,) = torch.autograd.grad(losses.sum(), theta, retain_graph=True)
    w = metrics["gradient_weight"]  # [4]
    c = LOSS_SCALE.get(name, lambda _: 1.0)(hp)
    chosen_r, rejected_r = spec.reward(PairBatch(**inputs), **hp)
    margin_grads = torch.stack(
        [torch.autograd.grad(m, theta, retain_graph=True)[0] for m in chosen_r - rejected_r]
    )  # [4, 6]
    nll = -logp_w / inputs["chosen_lengths"]  # [4]
    nll_grads = torch.stack([torch.autograd.grad(v, theta, retain_graph=True)[0] for v in nll])  # [4, 6]
    expected = (-c * w[:, None] * margin_grads + hp.get("lambda_", 0.0) * nll_grads).sum(0)  # [6]
    torch.testing.assert_close(grad, expected)


def test_alpha_dpo_margin_gradient_is_eq7():
    """Eq. 7 written out: alpha_dpo's ∇θm = β(∇logπ(y_w) − ∇logπ(y_l)) (the reference has no θ)."""
    theta = torch.tensor([0.3, -0.2], dtype=torch.float64, requires_grad=True)
    logp_w, logp_l = -(theta**2).sum() - 1, -(theta.sum() ** 2) - 2
    b = PairBatch(logp_w[None], logp_l[None], t(-1.5), t(-2.5), t(3.0), t(3.0))
    chosen_r, rejected_r = OBJECTIVES["alpha_dpo"].reward(b, beta=0.5, alpha=0.07)
    (grad,) = torch.autograd.grad((chosen_r - rejected_r).sum(), theta)
    by_hand = 0.5 * (-2 * theta.detach() + 2 * theta.detach().sum())  # β(∇logπ_w − ∇logπ_l)
    torch.testing.assert_close(grad, by_hand)


def test_aipo_with_zero_alpha_and_lambda_equals_dpo():
    torch.manual_seed(0)
    batch = {k: torch.randn(16, dtype=torch.float64) * 20 - 50 for k in list(PAIR)[:4]}
    batch |= {
        "chosen_lengths": torch.randint(1, 100, (16,)).double(),
        "rejected_lengths": torch.full((16,), 7.0),
    }
    aipo_losses, aipo_metrics = pair_loss("aipo", **batch, beta=0.3, alpha=0.0, lambda_=0.0)
    dpo_losses, dpo_metrics = pair_loss("dpo", **batch, beta=0.3)
    torch.testing.assert_close(aipo_losses, dpo_losses, rtol=0, atol=0)
    for key in ("rewards_chosen", "rewards_rejected", "gradient_weight"):
        torch.testing.assert_close(aipo_metrics[key], dpo_metrics[key], rtol=0, atol=0)


def test_rdpo_with_zero_alpha_equals_dpo():
    batch = _random_batch(seed=7)
    rdpo_losses, rdpo_metrics = pair_loss("rdpo", **batch, beta=0.2, alpha=0.0)
    dpo_losses, dpo_metrics = pair_loss("dpo", **batch, beta=0.2)
    torch.testing.assert_close(rdpo_losses, dpo_losses, rtol=0, atol=0)
    torch.testing.assert_close(rdpo_metrics["gradient_weight"], dpo_metrics["gradient_weight"])


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
        for fn in (spec.fn, spec.reward, spec.weight):
            assert "Eq." in (fn.__doc__ or "") or "§" in (fn.__doc__ or ""), (spec.name, fn.__name__)
        assert "Eq." in spec.citation, spec.name
        assert spec.loss_formula and spec.reward_formula and spec.weight_formula, spec.name
        assert set(spec.defaults) == set(spec.hyperparameters), spec.name


def test_citations_name_the_aipo_papers_equations():
    """AIPO's final objective is Eq. 10 (α-DPO is Eq. 6, its weight Eq. 8); R-DPO is Park et al. Eq. 9."""
    assert OBJECTIVES["aipo"].citation == "Shen et al. 2024, Eq. 10"
    assert "Eq. 10" in (OBJECTIVES["aipo"].fn.__doc__ or "")
    assert "Eq. 8" in (OBJECTIVES["aipo"].weight.__doc__ or "")
    assert "Table 6" in (OBJECTIVES["dpo_nll"].fn.__doc__ or "")
    assert "+ (α|y_w| − α|y_l|)" in (OBJECTIVES["rdpo"].fn.__doc__ or "")


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
