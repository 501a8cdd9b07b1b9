"""Temporal-difference targets and losses, as pure functions over tensors (and two in-place steps).

What the value-based and actor-critic algorithms share, kept out of the algorithms so that an adapter or a
new agent reuses the exact same arithmetic:

    ======================================  ==================================================================
    clipped double-Q target (CAQL, TD3)     ``clipped_double_q_targets``: r + γ(1−d) min(Q₁', Q₂')
    squared / hinge Bellman loss (CAQL)     ``bellman_loss`` ("l2" or "hinge" with a multiplier λ),
                                            ``hinge_multiplier_step`` (dual ascent on λ)
    soft (entropy) target (SAC)             ``soft_q_targets``: r + γ(1−d)[min_j Q_j' − α log π(a'|s')]
    temperature (SAC, VMBPO)                ``temperature_step`` on −mean(log α · (log π + H̄))
    LINEX backup (VMBPO)                    ``linex_loss``; ``soft_optimistic_backup`` on a finite MDP
    bounded backup (VMBPO)                  ``bounded_soft_backup`` on a finite MDP: expected backup plus
                                            a capped, not backed-up optimism bonus
    Polyak averaging                        ``polyak_update``: θ' ← (1 − τ) θ' + τ θ
    ======================================  ==================================================================

``terminated`` is 1.0 (or True) where the next state is terminal: the bootstrap is cut there and only
there, so a time-limit truncation must be passed as not terminated.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

BellmanLoss = Literal["l2", "hinge"]


def clipped_double_q_targets(rewards: torch.Tensor, terminated: torch.Tensor, next_q: torch.Tensor,
                             next_q2: torch.Tensor | None, gamma: float) -> torch.Tensor:
    """``y = r + gamma (1 - d) min(next_q, next_q2)``; with ``next_q2`` None, no clipping (plain Q-learning)."""
    bootstrap = next_q if next_q2 is None else torch.minimum(next_q, next_q2)
    return rewards + gamma * (1.0 - terminated.to(rewards.dtype)) * bootstrap


def bellman_loss(q: torch.Tensor, targets: torch.Tensor, kind: BellmanLoss = "l2",
                 multiplier: torch.Tensor | float | None = None) -> torch.Tensor:
    """The Q loss: ``mean (q - y)^2`` ("l2"), or the LP hinge ``mean[q + lambda max(0, y - q)]`` ("hinge").

    The hinge loss is the Lagrangian of ``min sum q  s.t.  q >= y`` (CAQL's LP view of the Bellman equation);
    ``multiplier`` is lambda, learned by :func:`hinge_multiplier_step`.
    """
    if kind == "l2":
        return (q - targets).pow(2).mean()
    if kind != "hinge":
        raise ValueError(f"kind must be 'l2' or 'hinge', got {kind!r}.")
    if multiplier is None:
        raise ValueError("the hinge loss needs the multiplier lambda (multiplier=...).")
    return (q + multiplier * torch.relu(targets - q)).mean()


def hinge_multiplier_step(log_multiplier: torch.Tensor, optimizer: torch.optim.Optimizer, q: torch.Tensor,
                          targets: torch.Tensor) -> None:
    """One optimiser step of dual ascent on ``lambda = exp(log_multiplier)``: it minimises
    ``-mean(lambda (y - q))`` (``q`` detached), so lambda grows while targets exceed the Q-values."""
    loss = -(log_multiplier.exp() * (targets - q.detach())).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def temperature_step(log_alpha: torch.Tensor, optimizer: torch.optim.Optimizer, log_prob: torch.Tensor,
                     target_entropy: float) -> None:
    """One Adam step on SAC's temperature loss ``-mean(log_alpha * (log_prob + target_entropy))``
    (``log_prob`` detached), which raises alpha while the policy's entropy is below the target."""
    loss = -(log_alpha * (log_prob + target_entropy)).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def soft_q_targets(rewards: torch.Tensor, terminated: torch.Tensor, next_q: torch.Tensor,
                   next_log_prob: torch.Tensor, alpha: torch.Tensor | float, gamma: float) -> torch.Tensor:
    """``y = r + gamma (1 - d) [min_j next_q_j - alpha log pi(a'|s')]``; ``next_q`` is ``[num_critics, B]``."""
    next_value = next_q.min(dim=0).values - alpha * next_log_prob
    return rewards + gamma * (1.0 - terminated) * next_value


def polyak_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """``target <- (1 - tau) target + tau source``, in place."""
    target_params, source_params = list(target.parameters()), list(source.parameters())
    if len(target_params) != len(source_params):
        raise ValueError(f"target has {len(target_params)} parameter tensors, source {len(source_params)}.")
    with torch.no_grad():
        # One fused call for all tensors: a per-tensor loop costs more than the arithmetic for small nets.
        torch._foreach_lerp_(target_params, source_params, tau)



def soft_optimistic_backup(rewards: torch.Tensor, transitions: torch.Tensor, prior_policy: torch.Tensor,
                           values: torch.Tensor, eta: float, gamma: float) -> dict[str, torch.Tensor]:
    """One E-step backup on a finite MDP with ``S`` states and ``A`` actions.

    Args:
        rewards: ``r(s, a)``, ``[S, A]``.
        transitions: ``p(s'|s, a)``, ``[S, A, S]``.
        prior_policy: the baseline ``pi(a|s)``, ``[S, A]``.
        values: the current ``V(s')``, ``[S]``.

    Returns a dict with ``q_values`` ``Q(s,a) = r + eta log sum_s' p exp(gamma V(s')/eta)`` ``[S, A]``,
    ``values`` ``V(s) = eta log sum_a pi exp(Q/eta)`` ``[S]``, the variational policy
    ``q_policy = pi exp((Q - V)/eta)`` ``[S, A]`` and the variational model
    ``q_model = p exp((r + gamma V(s') - Q)/eta)`` ``[S, A, S]``.
    """
    log_p = transitions.log()
    soft_next = eta * torch.logsumexp(log_p + gamma * values / eta, dim=-1)
    q_values = rewards + soft_next
    new_values = eta * torch.logsumexp(prior_policy.log() + q_values / eta, dim=-1)
    q_policy = prior_policy * torch.exp((q_values - new_values.unsqueeze(-1)) / eta)
    q_model = transitions * torch.exp((gamma * values - soft_next.unsqueeze(-1)) / eta)
    return {"q_values": q_values, "values": new_values, "q_policy": q_policy, "q_model": q_model}


def linex_loss(predictions: torch.Tensor, targets: torch.Tensor, eta: float | torch.Tensor,
               max_log_ratio: float = math.inf) -> torch.Tensor:
    """``eta^2 (exp(nu) - 1 - nu)`` with ``nu = (targets - predictions)/eta``, elementwise.

    Its minimiser over a constant prediction is the soft optimistic value ``eta log E[exp(targets/eta)]``;
    ``nu`` is then a log density-ratio estimate (``E[exp(nu)] = 1``). For ``nu > max_log_ratio`` the
    exponential continues linearly (same value and slope at the joint).
    """
    nu = (targets - predictions) / eta
    capped = nu.clamp(max=max_log_ratio)
    # expm1 keeps exp(nu) - 1 - nu accurate for small nu (large eta), where it is about nu^2 / 2.
    exp_nu_minus_one = torch.expm1(capped) + torch.where(nu > max_log_ratio, capped.exp() * (nu - capped), 0.0)
    return eta**2 * (exp_nu_minus_one - nu)


def bounded_soft_backup(rewards: torch.Tensor, transitions: torch.Tensor, prior_policy: torch.Tensor,
                        values: torch.Tensor, policy_eta: float, model_eta: float, bonus_cap: float,
                        gamma: float) -> dict[str, torch.Tensor]:
    """One backup of VMBPO's bounded E-step (see :mod:`rlcore.algos.vmbpo`) on a finite MDP.

    With the risk-neutral soft value ``V`` of the next states (``[S]``), ``r`` ``[S, A]``, ``p`` ``[S, A, S]`` and
    the baseline ``pi`` ``[S, A]``, it returns:

    * ``expected_q = r + gamma E_p[V(s')]``, the ordinary expected backup;
    * ``bonus = min(model_eta log E_p[exp(gamma (V(s') - E_p V) / model_eta)], bonus_cap)``, the one-step optimism
      of the variational model (``>= 0`` by Jensen's inequality), capped;
    * ``q_values = expected_q + bonus``, the optimistic values that the variational policy maximises (equal to
      :func:`soft_optimistic_backup`'s with ``eta = model_eta`` while the cap is not reached);
    * ``values = policy_eta log E_pi[exp(expected_q / policy_eta)]``, the risk-neutral soft value carried to the
      next backup: the bonus is **not** backed up, so it never compounds over the horizon;
    * ``q_policy = pi exp((q_values - V+) / policy_eta)`` with ``V+ = policy_eta log E_pi[exp(q_values /
      policy_eta)]``, and ``q_model = p exp(gamma V(s') / model_eta) / Z``, the tilted (uncapped) model.
    """
    next_values = gamma * values
    expected_next = (transitions * next_values).sum(-1)
    tilt = torch.logsumexp(transitions.log() + next_values / model_eta, dim=-1)
    bonus = (model_eta * tilt - expected_next).clamp(min=0.0, max=bonus_cap)
    expected_q = rewards + expected_next
    q_values = expected_q + bonus
    new_values = policy_eta * torch.logsumexp(prior_policy.log() + expected_q / policy_eta, dim=-1)
    optimistic_values = policy_eta * torch.logsumexp(prior_policy.log() + q_values / policy_eta, dim=-1)
    q_policy = prior_policy * torch.exp((q_values - optimistic_values.unsqueeze(-1)) / policy_eta)
    q_model = transitions * torch.exp(next_values / model_eta - tilt.unsqueeze(-1))
    return {"expected_q": expected_q, "bonus": bonus, "q_values": q_values, "values": new_values,
            "q_policy": q_policy, "q_model": q_model}
