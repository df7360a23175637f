"""Preference-optimisation objectives: one small pure function each, one registry.

Every objective maps per-pair summed log-probabilities (policy and reference, chosen `w` and
rejected `l`) to a per-pair loss. Notation follows the AIPO paper (Shen et al., 2024):

    Δπ    = logπθ(y_w) − logπθ(y_l)          (s_θ)
    Δref  = logπref(y_w) − logπref(y_l)      (s_ref)

All inputs are 1-D tensors of shape [B] (B = number of pairs); every returned tensor is [B].
The trainer calls `pair_loss(name, ...)`; it never branches on the objective's name.
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
    def chosen_nll(self) -> Tensor:
        """Length-normalised negative log-likelihood of the chosen response, −logπθ(y_w)/|y_w|."""
        return -self.policy_chosen_logps / self.chosen_lengths.clamp(min=1)  # [B]


ObjectiveFn = Callable[..., Tensor]


@dataclass(frozen=True)
class ObjectiveSpec:
    """A registered objective: its loss function, the hyperparameters it reads, their defaults."""

    name: str
    fn: ObjectiveFn
    hyperparameters: tuple[str, ...]
    defaults: Mapping[str, float] = field(default_factory=dict)
    citation: str = ""
    # True when `alpha` scales the reference margin (Δπ − (1+α)Δref), which changes Eq. 8's weight.
    scales_reference: bool = False


def dpo(b: PairBatch, *, beta: float) -> Tensor:
    """DPO: −logσ(β(Δπ − Δref)).

    Rafailov et al., 2023, "Direct Preference Optimization", Eq. 7.
    """
    return -F.logsigmoid(beta * (b.s_theta - b.s_ref))


def dpo_nll(b: PairBatch, *, beta: float, lambda_: float) -> Tensor:
    """DPO plus a length-normalised NLL term on the chosen response: dpo − λ·logπθ(y_w)/|y_w|.

    Pang et al., 2024, "Iterative Reasoning Preference Optimization", Eq. 1 (the NLL term as
    length-normalised in the AIPO paper's Table 1).
    """
    return dpo(b, beta=beta) + lambda_ * b.chosen_nll


def simpo(b: PairBatch, *, beta: float, gamma: float) -> Tensor:
    """SimPO: −logσ(β·logπθ(y_w)/|y_w| − β·logπθ(y_l)/|y_l| − γ), reference-free.

    Meng et al., 2024, "SimPO: Simple Preference Optimization with a Reference-Free Reward", Eq. 6.
    """
    chosen = b.policy_chosen_logps / b.chosen_lengths.clamp(min=1)  # [B]
    rejected = b.policy_rejected_logps / b.rejected_lengths.clamp(min=1)  # [B]
    return -F.logsigmoid(beta * (chosen - rejected) - gamma)


def alpha_dpo(b: PairBatch, *, beta: float, alpha: float) -> Tensor:
    """Reference-scaled DPO: −logσ(β(Δπ − (1+α)Δref)).

    Shen et al., 2024, "AIPO: Improving Training Objective for Iterative Preference Optimization",
    Eq. 6 (gradient weight in Eq. 8).
    """
    return -F.logsigmoid(beta * (b.s_theta - (1.0 + alpha) * b.s_ref))


def aipo(b: PairBatch, *, beta: float, alpha: float, lambda_: float) -> Tensor:
    """AIPO: alpha_dpo − λ·logπθ(y_w)/|y_w|.

    Shen et al., 2024, "AIPO", Eq. 9 (Eq. 6 plus the length-normalised NLL of the chosen response).
    """
    return alpha_dpo(b, beta=beta, alpha=alpha) + lambda_ * b.chosen_nll


def ipo(b: PairBatch, *, beta: float) -> Tensor:
    """IPO: (Δπ − Δref − 1/(2β))², with β playing the role of τ.

    Azar et al., 2023, "A General Theoretical Paradigm to Understand Learning from Human
    Preferences", Eq. 17.
    """
    return (b.s_theta - b.s_ref - 1.0 / (2.0 * beta)) ** 2


def rdpo(b: PairBatch, *, beta: float, alpha: float) -> Tensor:
    """Length-regularised DPO: −logσ(β(Δπ − Δref) − α(|y_w| − |y_l|)).

    Park et al., 2024, "Disentangling Length from Quality in Direct Preference Optimization", Eq. 9.
    """
    length_gap = b.chosen_lengths.to(b.s_theta.dtype) - b.rejected_lengths.to(b.s_theta.dtype)  # [B]
    return -F.logsigmoid(beta * (b.s_theta - b.s_ref) - alpha * length_gap)


def _register(*specs: ObjectiveSpec) -> Mapping[str, ObjectiveSpec]:
    return MappingProxyType({s.name: s for s in specs})


OBJECTIVES: Mapping[str, ObjectiveSpec] = _register(
    ObjectiveSpec("dpo", dpo, ("beta",), {"beta": 0.1}, "Rafailov et al. 2023, Eq. 7"),
    ObjectiveSpec(
        "dpo_nll", dpo_nll, ("beta", "lambda_"), {"beta": 0.1, "lambda_": 0.2}, "Pang et al. 2024, Eq. 1"
    ),
    ObjectiveSpec("simpo", simpo, ("beta", "gamma"), {"beta": 2.0, "gamma": 0.5}, "Meng et al. 2024, Eq. 6"),
    ObjectiveSpec(
        "alpha_dpo",
        alpha_dpo,
        ("beta", "alpha"),
        {"beta": 0.1, "alpha": 0.05},
        "Shen et al. 2024, Eq. 6",
        scales_reference=True,
    ),
    ObjectiveSpec(
        "aipo",
        aipo,
        ("beta", "alpha", "lambda_"),
        {"beta": 0.1, "alpha": 0.05, "lambda_": 0.2},
        "Shen et al. 2024, Eq. 9",
        scales_reference=True,
    ),
    ObjectiveSpec("ipo", ipo, ("beta",), {"beta": 0.1}, "Azar et al. 2023, Eq. 17"),
    ObjectiveSpec("rdpo", rdpo, ("beta", "alpha"), {"beta": 0.1, "alpha": 0.01}, "Park et al. 2024, Eq. 9"),
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


def _metrics(b: PairBatch, losses: Tensor, beta: float, alpha: float) -> dict[str, Tensor]:
    """Per-pair diagnostics, all detached [B] tensors (AIPO paper Figs. 4, 6 and Eq. 8)."""
    with torch.no_grad():
        chosen_rewards = beta * (b.policy_chosen_logps - b.ref_chosen_logps)  # [B]
        rejected_rewards = beta * (b.policy_rejected_logps - b.ref_rejected_logps)  # [B]
        # Eq. 8: the weight each pair's gradient gets under the (α-scaled) DPO loss.
        weight = torch.sigmoid(beta * ((1.0 + alpha) * b.s_ref - b.s_theta))
        return {
            "loss": losses.detach(),
            "rewards_chosen": chosen_rewards,
            "rewards_rejected": rejected_rewards,
            "margins": chosen_rewards - rejected_rewards,
            "accuracy": (chosen_rewards > rejected_rewards).to(losses.dtype),
            "s_ref": b.s_ref.detach(),
            "s_theta": b.s_theta.detach(),
            "gradient_weight": weight,
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
    losses = spec.fn(batch, **{k: given[k] for k in spec.hyperparameters})  # [B]
    return losses, _metrics(batch, losses, beta, alpha if spec.scales_reference else 0.0)
