"""Preference-optimisation objectives: one registry; per objective a loss, an implicit reward and a
gradient weight, each one small pure function citing its paper and equation.

Every objective maps per-pair summed log-probabilities (policy and reference, chosen `w` and
rejected `l`) and response lengths |y| (tokens) to a per-pair loss. Notation follows the AIPO
paper (Shen et al., 2024):

    s_θ   = logπθ(y_w) − logπθ(y_l)          (Δπ)
    s_ref = logπref(y_w) − logπref(y_l)      (Δref)

Implicit reward r(y): the per-response score whose margin m = r(y_w) − r(y_l) the objective's
preference term is a function of; `rewards_chosen`, `rewards_rejected`, `margins` and `accuracy`
(r(y_w) > r(y_l)) report it under the same names for every objective.

Gradient weight, one definition for every objective: w = −(1/c)·∂ℓ/∂m, the derivative of the
pair's preference loss with respect to its implicit-reward margin with the loss's constant
prefactor c divided out (c = 1 for the logistic objectives, 1/β² for IPO), so that
∇θℓ = −c·w·∇θm and DPO's w is σ(β(s_ref − s_θ)) (AIPO paper Eq. 8 with α = 0). The NLL term of
dpo_nll and aipo is not a preference term and is not part of w. docs/objectives.md tabulates all.

All inputs are 1-D tensors of shape [B] (B = number of pairs); every returned tensor is [B].
Reward and weight functions receive all of their objective's hyperparameters and ignore the ones
they do not read (dpo_nll's λ, say). The trainer calls `pair_loss(name, ...)`; it never branches
on the objective's name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import Tensor

HYPERPARAMETERS = ("beta", "alpha", "lambda_", "gamma")


@dataclass(frozen=True)
class PairBatch:
    """Per-pair inputs of an objective; every field is a [B] tensor."""

    policy_chosen_logps: Tensor
    policy_rejected_logps: Tensor
    ref_chosen_logps: Tensor
    ref_rejected_logps: Tensor
    chosen_lengths: Tensor
    rejected_lengths: Tensor

    @property
    def s_theta(self) -> Tensor:
        return self.policy_chosen_logps - self.policy_rejected_logps  # [B]

    @property
    def s_ref(self) -> Tensor:
        return self.ref_chosen_logps - self.ref_rejected_logps  # [B]

    @property
    def length_gap(self) -> Tensor:
        """|y_w| − |y_l| in tokens, in the log-probs' dtype [B]."""
        dtype = self.policy_chosen_logps.dtype
        return self.chosen_lengths.to(dtype) - self.rejected_lengths.to(dtype)  # [B]

    @property
    def chosen_nll(self) -> Tensor:
        """Length-normalised negative log-likelihood of the chosen response, −logπθ(y_w)/|y_w|."""
        return -self.policy_chosen_logps / self.chosen_lengths.clamp(min=1)  # [B]


ObjectiveFn = Callable[..., Tensor]
RewardFn = Callable[..., tuple[Tensor, Tensor]]
WeightFn = Callable[..., Tensor]


@dataclass(frozen=True)
class ObjectiveSpec:
    """A registered objective: loss, implicit reward and gradient weight functions, the
    hyperparameters they read with their defaults, and the formulas as text for docs and clients."""

    name: str
    fn: ObjectiveFn
    reward: RewardFn
    weight: WeightFn
    hyperparameters: tuple[str, ...]
    defaults: Mapping[str, float] = field(default_factory=dict)
    citation: str = ""
    loss_formula: str = ""
    reward_formula: str = ""
    weight_formula: str = ""
    # Where w can lie: (0, 1) for the logistic objectives; None where it is unbounded (IPO).
    weight_range: tuple[float, float] | None = (0.0, 1.0)
    # True when `alpha` scales the reference margin (Δπ − (1+α)Δref), which changes Eq. 8's weight.
    scales_reference: bool = False


# ----------------------------------------------------------------------------- DPO


def dpo(b: PairBatch, *, beta: float) -> Tensor:
    """DPO: −logσ(β(Δπ − Δref)).

    Rafailov et al., 2023, "Direct Preference Optimization", Eq. 7.
    """
    return -F.logsigmoid(beta * (b.s_theta - b.s_ref))


def dpo_reward(b: PairBatch, *, beta: float, **_: float) -> tuple[Tensor, Tensor]:
    """r(y) = β·log(πθ(y)/πref(y)): Rafailov et al., 2023, Eq. 5 (β·logZ cancels in the margin)."""
    chosen = beta * (b.policy_chosen_logps - b.ref_chosen_logps)  # [B]
    rejected = beta * (b.policy_rejected_logps - b.ref_rejected_logps)  # [B]
    return chosen, rejected


def dpo_weight(b: PairBatch, *, beta: float, **_: float) -> Tensor:
    """w = σ(β(Δref − Δπ)) = σ(−m): −∂(Eq. 7)/∂m; Rafailov et al., 2023, §4 (gradient of Eq. 7)."""
    return torch.sigmoid(beta * (b.s_ref - b.s_theta))


def dpo_nll(b: PairBatch, *, beta: float, lambda_: float) -> Tensor:
    """DPO plus a length-normalised NLL term on the chosen response: dpo − λ·logπθ(y_w)/|y_w|.

    Pang et al., 2024, "Iterative Reasoning Preference Optimization", Eq. 1 (the NLL term as
    length-normalised in the AIPO paper's Table 6).
    """
    return dpo(b, beta=beta) + lambda_ * b.chosen_nll


# ----------------------------------------------------------------------------- SimPO


def _simpo_rewards(b: PairBatch, beta: float) -> tuple[Tensor, Tensor]:
    chosen = beta * b.policy_chosen_logps / b.chosen_lengths.clamp(min=1)  # [B]
    rejected = beta * b.policy_rejected_logps / b.rejected_lengths.clamp(min=1)  # [B]
    return chosen, rejected


def simpo(b: PairBatch, *, beta: float, gamma: float) -> Tensor:
    """SimPO: −logσ(β·logπθ(y_w)/|y_w| − β·logπθ(y_l)/|y_l| − γ), reference-free.

    Meng et al., 2024, "SimPO: Simple Preference Optimization with a Reference-Free Reward", Eq. 6.
    """
    chosen = b.policy_chosen_logps / b.chosen_lengths.clamp(min=1)  # [B]
    rejected = b.policy_rejected_logps / b.rejected_lengths.clamp(min=1)  # [B]
    return -F.logsigmoid(beta * (chosen - rejected) - gamma)


def simpo_reward(b: PairBatch, *, beta: float, **_: float) -> tuple[Tensor, Tensor]:
    """r(y) = (β/|y|)·logπθ(y), reference-free: Meng et al., 2024, Eq. 4."""
    return _simpo_rewards(b, beta)


def simpo_weight(b: PairBatch, *, beta: float, gamma: float, **_: float) -> Tensor:
    """w = σ(γ − m), m = (β/|y_w|)logπθ(y_w) − (β/|y_l|)logπθ(y_l): −∂(Meng et al. Eq. 6)/∂m."""
    chosen, rejected = _simpo_rewards(b, beta)
    return torch.sigmoid(gamma - (chosen - rejected))


# ----------------------------------------------------------------------------- α-DPO and AIPO


def alpha_dpo(b: PairBatch, *, beta: float, alpha: float) -> Tensor:
    """Reference-scaled DPO: −logσ(β(Δπ − (1+α)Δref)).

    Shen et al., 2024, "AIPO: Improving Training Objective for Iterative Preference Optimization",
    Eq. 6 (gradient weight in Eq. 8).
    """
    return -F.logsigmoid(beta * (b.s_theta - (1.0 + alpha) * b.s_ref))


def alpha_dpo_reward(b: PairBatch, *, beta: float, alpha: float, **_: float) -> tuple[Tensor, Tensor]:
    """r(y) = β(logπθ(y) − (1+α)·logπref(y)): the α-scaled reference of Shen et al., 2024, Eq. 6.

    Its margin is β(Δπ − (1+α)Δref), the argument of Eq. 6's σ. At θ = θ_ref it is −βα·Δref, so a
    pair the reference already agrees with starts below zero and is pushed harder (Eq. 8).
    """
    chosen = beta * (b.policy_chosen_logps - (1.0 + alpha) * b.ref_chosen_logps)  # [B]
    rejected = beta * (b.policy_rejected_logps - (1.0 + alpha) * b.ref_rejected_logps)  # [B]
    return chosen, rejected


def alpha_dpo_weight(b: PairBatch, *, beta: float, alpha: float, **_: float) -> Tensor:
    """w = σ(β((1+α)Δref − Δπ)): Shen et al., 2024, Eq. 8."""
    return torch.sigmoid(beta * ((1.0 + alpha) * b.s_ref - b.s_theta))


def aipo(b: PairBatch, *, beta: float, alpha: float, lambda_: float) -> Tensor:
    """AIPO: alpha_dpo − λ·logπθ(y_w)/|y_w|.

    Shen et al., 2024, "AIPO", Eq. 10 (Eq. 6 plus the length-normalised NLL of the chosen response).
    """
    return alpha_dpo(b, beta=beta, alpha=alpha) + lambda_ * b.chosen_nll


# ----------------------------------------------------------------------------- IPO


def ipo(b: PairBatch, *, beta: float) -> Tensor:
    """IPO: (Δπ − Δref − 1/(2β))², with β playing the role of τ.

    Azar et al., 2023, "A General Theoretical Paradigm to Understand Learning from Human
    Preferences", Eq. 17.
    """
    return (b.s_theta - b.s_ref - 1.0 / (2.0 * beta)) ** 2


def ipo_weight(b: PairBatch, *, beta: float, **_: float) -> Tensor:
    """w = 1 − 2m, m = β(Δπ − Δref), from Azar et al., 2023, Eq. 17.

    With the DPO reward (β as τ), Eq. 17 reads ℓ = (m − ½)²/β²: c = 1/β², and −∂[(m − ½)²]/∂m =
    1 − 2m. w is 1 at θ = θ_ref, 0 at IPO's target margin m = ½ and negative beyond it, where the
    squared loss pulls the margin back down (unlike every logistic objective, whose w stays in (0, 1)).
    """
    return 1.0 - 2.0 * beta * (b.s_theta - b.s_ref)


# ----------------------------------------------------------------------------- R-DPO


def rdpo(b: PairBatch, *, beta: float, alpha: float) -> Tensor:
    """Length-regularised DPO: −logσ(β(Δπ − Δref) + α(|y_w| − |y_l|)).

    Park et al., 2024, "Disentangling Length from Quality in Direct Preference Optimization",
    Eq. 9: −logσ(β·log πθ(y_w)/πref(y_w) − β·log πθ(y_l)/πref(y_l) + (α|y_w| − α|y_l|)).

    Why "+": Park et al. add −α|y| to the reward the policy maximises, so the reward the preference
    data reveals is β·log(πθ/πref) + α|y|. For a longer chosen response the length credit α(|y_w| − |y_l|)
    already explains part of the preference: for the same log-ratio margin the loss is SMALLER than
    DPO's and its gradient weight σ(−β(Δπ − Δref) − α(|y_w| − |y_l|)) is smaller, which is what
    reduces the pull toward a longer chosen response. (With "−" the weight would grow with the length
    gap and push harder toward length.)
    """
    return -F.logsigmoid(beta * (b.s_theta - b.s_ref) + alpha * b.length_gap)


def rdpo_reward(b: PairBatch, *, beta: float, alpha: float, **_: float) -> tuple[Tensor, Tensor]:
    """r(y) = β·log(πθ(y)/πref(y)) + α|y|: the reward inside σ of Park et al., 2024, Eq. 9."""
    chosen, rejected = dpo_reward(b, beta=beta)
    dtype = chosen.dtype
    return chosen + alpha * b.chosen_lengths.to(dtype), rejected + alpha * b.rejected_lengths.to(dtype)


def rdpo_weight(b: PairBatch, *, beta: float, alpha: float, **_: float) -> Tensor:
    """w = σ(−β(Δπ − Δref) − α(|y_w| − |y_l|)) = σ(−m): −∂(Park et al. Eq. 9)/∂m, length term included."""
    return torch.sigmoid(-beta * (b.s_theta - b.s_ref) - alpha * b.length_gap)


# ----------------------------------------------------------------------------- registry

_DPO_LOSS = "−logσ(β(s_θ − s_ref))"
_DPO_REWARD = "β·log(πθ(y)/πref(y))"
_DPO_WEIGHT = "σ(β(s_ref − s_θ))"
_ALPHA_DPO_LOSS = "−logσ(β(s_θ − (1+α)s_ref))"
_ALPHA_DPO_REWARD = "β(logπθ(y) − (1+α)·logπref(y))"
_ALPHA_DPO_WEIGHT = "σ(β((1+α)s_ref − s_θ))"
_NLL = "λ·(−logπθ(y_w)/|y_w|)"


def _register(*specs: ObjectiveSpec) -> Mapping[str, ObjectiveSpec]:
    return MappingProxyType({s.name: s for s in specs})


OBJECTIVES: Mapping[str, ObjectiveSpec] = _register(
    ObjectiveSpec(
        "dpo",
        dpo,
        dpo_reward,
        dpo_weight,
        ("beta",),
        {"beta": 0.1},
        "Rafailov et al. 2023, Eq. 7",
        loss_formula=_DPO_LOSS,
        reward_formula=_DPO_REWARD,
        weight_formula=_DPO_WEIGHT,
    ),
    ObjectiveSpec(
        "dpo_nll",
        dpo_nll,
        dpo_reward,
        dpo_weight,
        ("beta", "lambda_"),
        {"beta": 0.1, "lambda_": 0.2},
        "Pang et al. 2024, Eq. 1 (length-normalised NLL as in Shen et al. 2024, Table 6)",
        loss_formula=f"{_DPO_LOSS} + {_NLL}",
        reward_formula=_DPO_REWARD,
        weight_formula=_DPO_WEIGHT,
    ),
    ObjectiveSpec(
        "simpo",
        simpo,
        simpo_reward,
        simpo_weight,
        ("beta", "gamma"),
        {"beta": 2.0, "gamma": 0.5},
        "Meng et al. 2024, Eq. 6",
        loss_formula="−logσ(β·logπθ(y_w)/|y_w| − β·logπθ(y_l)/|y_l| − γ)",
        reward_formula="(β/|y|)·logπθ(y)",
        weight_formula="σ(γ − (β·logπθ(y_w)/|y_w| − β·logπθ(y_l)/|y_l|))",
    ),
    ObjectiveSpec(
        "alpha_dpo",
        alpha_dpo,
        alpha_dpo_reward,
        alpha_dpo_weight,
        ("beta", "alpha"),
        {"beta": 0.1, "alpha": 0.05},
        "Shen et al. 2024, Eq. 6",
        loss_formula=_ALPHA_DPO_LOSS,
        reward_formula=_ALPHA_DPO_REWARD,
        weight_formula=_ALPHA_DPO_WEIGHT,
        scales_reference=True,
    ),
    ObjectiveSpec(
        "aipo",
        aipo,
        alpha_dpo_reward,
        alpha_dpo_weight,
        ("beta", "alpha", "lambda_"),
        {"beta": 0.1, "alpha": 0.05, "lambda_": 0.2},
        "Shen et al. 2024, Eq. 10",
        loss_formula=f"{_ALPHA_DPO_LOSS} + {_NLL}",
        reward_formula=_ALPHA_DPO_REWARD,
        weight_formula=_ALPHA_DPO_WEIGHT,
        scales_reference=True,
    ),
    ObjectiveSpec(
        "ipo",
        ipo,
        dpo_reward,
        ipo_weight,
        ("beta",),
        {"beta": 0.1},
        "Azar et al. 2023, Eq. 17",
        loss_formula="(s_θ − s_ref − 1/(2β))²",
        reward_formula=_DPO_REWARD,
        weight_formula="1 − 2β(s_θ − s_ref)",
        weight_range=None,
    ),
    ObjectiveSpec(
        "rdpo",
        rdpo,
        rdpo_reward,
        rdpo_weight,
        ("beta", "alpha"),
        {"beta": 0.1, "alpha": 0.01},
        "Park et al. 2024, Eq. 9",
        loss_formula="−logσ(β(s_θ − s_ref) + α(|y_w| − |y_l|))",
        reward_formula=f"{_DPO_REWARD} + α|y|",
        weight_formula="σ(β(s_ref − s_θ) − α(|y_w| − |y_l|))",
    ),
)


class ObjectiveError(ValueError):
    """A bad objective name or hyperparameter; the message names the field."""


def get_objective(name: str) -> ObjectiveSpec:
    try:
        return OBJECTIVES[name]
    except KeyError:
        valid = ", ".join(sorted(OBJECTIVES))
        raise ObjectiveError(f"unknown objective {name!r}; valid names: {valid}") from None


def validate_hyperparameters(name: str, values: Mapping[str, float]) -> None:
    """Reject hyperparameters the objective does not read and values outside their domain.

    β > 0; α, λ, γ ≥ 0. A hyperparameter the objective does not use is an error, never ignored,
    so a sweep over `alpha` on `dpo` fails loudly instead of producing identical runs.
    """
    spec = get_objective(name)
    for key, value in values.items():
        if key not in HYPERPARAMETERS:
            raise ObjectiveError(f"{key}: not a hyperparameter (known: {', '.join(HYPERPARAMETERS)})")
        if key not in spec.hyperparameters:
            raise ObjectiveError(
                f"{key}: objective {name!r} does not use it (it uses: {', '.join(spec.hyperparameters)})"
            )
        if value != value or value in (float("inf"), float("-inf")):
            raise ObjectiveError(f"{key}: must be a finite number, got {value}")
        if key == "beta" and value <= 0:
            raise ObjectiveError(f"beta: must be > 0, got {value}")
        if key != "beta" and value < 0:
            raise ObjectiveError(f"{key}: must be >= 0, got {value}")


def _metrics(spec: ObjectiveSpec, b: PairBatch, losses: Tensor, hp: Mapping[str, float]) -> dict[str, Tensor]:
    """Per-pair diagnostics in the objective's own terms, all detached [B] tensors.

    Rewards, margins and accuracy use the objective's implicit reward and `gradient_weight` its
    declared weight (module doc); s_ref/s_θ feed the AIPO paper's Fig. 6 and Eq. 8 views.
    """
    with torch.no_grad():
        chosen_rewards, rejected_rewards = spec.reward(b, **hp)  # [B] each
        return {
            "loss": losses.detach(),
            "rewards_chosen": chosen_rewards,
            "rewards_rejected": rejected_rewards,
            "margins": chosen_rewards - rejected_rewards,
            "accuracy": (chosen_rewards > rejected_rewards).to(losses.dtype),
            "s_ref": b.s_ref.detach(),
            "s_theta": b.s_theta.detach(),
            "gradient_weight": spec.weight(b, **hp),
            "nll": b.chosen_nll.detach(),
        }


def pair_loss(
    name: str,
    *,
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    chosen_lengths: Tensor,
    rejected_lengths: Tensor,
    beta: float,
    alpha: float = 0.0,
    lambda_: float = 0.0,
    gamma: float = 0.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-pair losses [B] of objective `name` and a dict of per-pair [B] metric tensors.

    Hyperparameters the objective does not use must be left at 0 (an error otherwise).
    """
    spec = get_objective(name)
    given = {"beta": beta, "alpha": alpha, "lambda_": lambda_, "gamma": gamma}
    unused_nonzero = {k: v for k, v in given.items() if k not in spec.hyperparameters and v != 0.0}
    validate_hyperparameters(name, {**{k: given[k] for k in spec.hyperparameters}, **unused_nonzero})
    batch = PairBatch(
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        chosen_lengths,
        rejected_lengths,
    )
    hp = {k: given[k] for k in spec.hyperparameters}
    losses = spec.fn(batch, **hp)  # [B]
    return losses, _metrics(spec, batch, losses, hp)
