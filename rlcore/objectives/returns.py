"""Monte-Carlo returns and GAE over ``[T, N]`` rollouts, with truncation handled apart from termination.

Conventions (gymnasium's): at step t of env n the agent saw s_t, took a_t, got r_t and the flags

* ``terminated[t]``: s'_t is terminal, its value is 0 by definition: do **not** bootstrap;
* ``truncated[t]``: the episode was cut (time limit) at a non-terminal s'_t: bootstrap from V(s'_t);

and the env auto-reset, so the observation that follows in the rollout belongs to a new episode. V(s'_t)
must therefore be the value of the true next observation, ``info["final_obs"]`` at a truncated step, not of
the reset observation: that is what ``next_values[t]`` holds. In both cases nothing flows from step t + 1
back to step t (episodes do not leak into each other). The last step of the rollout, when not done, is cut by
the rollout, not by the env, and bootstraps from ``next_values[T−1]`` like a truncation.
"""

from __future__ import annotations

import torch

from rlcore.objectives._checks import as_mask, check_finite, check_positive, check_tensor


def _check_rollout(rewards: torch.Tensor, terminated: torch.Tensor, truncated: torch.Tensor,
                   gamma: float, **others: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate rollout tensors; return (not_terminated, episode_continues) as floats of the rewards' dtype."""
    check_tensor("rewards", rewards)
    check_tensor("terminated", terminated)
    check_tensor("truncated", truncated)
    if rewards.dim() == 0:
        raise ValueError("rewards must have a leading time dimension [T, ...] (for example [T, N]), got a scalar.")
    if not rewards.is_floating_point():
        raise ValueError(f"rewards must be a floating-point tensor, got dtype {rewards.dtype}.")
    shapes = {"rewards": rewards.shape, "terminated": terminated.shape, "truncated": truncated.shape}
    shapes.update({k: v.shape for k, v in others.items() if v is not None})
    if len(set(map(tuple, shapes.values()))) > 1:
        listed = ", ".join(f"{k}={tuple(s)}" for k, s in shapes.items())
        raise ValueError(f"rollout tensors must all have the shape of rewards [T, N], got {listed}.")
    if not (isinstance(gamma, (int, float)) and 0.0 <= gamma <= 1.0):
        raise ValueError(f"gamma must be a number in [0, 1], got {gamma!r}.")
    check_finite("rewards", rewards)
    for name, value in others.items():
        if value is not None:
            check_tensor(name, value)
            check_finite(name, value)
    term = as_mask(terminated, rewards.shape)
    done = term | as_mask(truncated, rewards.shape)
    return (~term).to(rewards.dtype), (~done).to(rewards.dtype)


def discounted_returns(
    rewards: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    gamma: float,
    next_values: torch.Tensor | None = None,
) -> torch.Tensor:
    """Discounted return-to-go G_t of every step of a rollout.

        G_t = r_t + γ (1 − term_t) · { G_{t+1}    if the episode continues (not done, t < T−1)
                                      { V(s'_t)    if truncated at t, or t = T−1 (cut by the rollout)

    Args:
        rewards: r_t, shape ``[T, ...]`` (usually ``[T, N]``).
        terminated: bool (or 0/1) flags of the same shape: s'_t is terminal (wins when both are set).
        truncated: bool (or 0/1) flags of the same shape: the episode was cut after step t.
        gamma: discount γ in [0, 1].
        next_values: V(s'_t) of the true next observation, same shape, used only where the episode was cut.
            None makes the bootstrap value 0: pure Monte-Carlo returns, exact for rollouts made of complete
            episodes, partial sums for episodes still running or truncated.

    Returns:
        G of the shape of ``rewards`` (no gradient flows into ``next_values``).
    """
    not_term, cont = _check_rollout(rewards, terminated, truncated, gamma, next_values=next_values)
    boot = torch.zeros_like(rewards) if next_values is None else next_values.detach().to(rewards.dtype)
    returns = torch.empty_like(rewards)
    future = boot[-1]
    for t in range(rewards.shape[0] - 1, -1, -1):
        if t < rewards.shape[0] - 1:
            # Continue from G_{t+1} inside an episode, bootstrap from V(s'_t) where it was truncated.
            future = cont[t] * returns[t + 1] + (1.0 - cont[t]) * boot[t]
        returns[t] = rewards[t] + gamma * not_term[t] * future
    return returns


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    gamma: float = 0.99,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al., 2016), GAE(γ, λ).

        δ_t = r_t + γ (1 − term_t) V(s'_t) − V(s_t)
        A_t = δ_t + γ λ (1 − done_t) A_{t+1},   A_T = 0,   done_t = term_t ∨ trunc_t
        R_t = A_t + V(s_t)   (the value targets, "TD(λ) returns")

    Because δ_t already bootstraps from the true next observation, truncation needs no special case beyond
    stopping the recursion at done_t; and the rollout's last step needs none at all.

    Args:
        rewards: r_t, shape ``[T, ...]`` (usually ``[T, N]``).
        values: V(s_t), same shape.
        next_values: V(s'_t) of the true next observation (``info["final_obs"]`` where truncated), same shape.
            Its entries at terminated steps are ignored.
        terminated: bool (or 0/1) flags, same shape: s'_t is terminal.
        truncated: bool (or 0/1) flags, same shape: the episode was cut after step t.
        gamma: discount γ in [0, 1].
        lam: λ in [0, 1]; 0 gives the one-step TD error, 1 the Monte-Carlo return minus V.

    Returns:
        (advantages, returns), both of the shape of ``rewards`` and detached.
    """
    not_term, cont = _check_rollout(rewards, terminated, truncated, gamma, values=values, next_values=next_values)
    if not (isinstance(lam, (int, float)) and 0.0 <= lam <= 1.0):
        raise ValueError(f"lam must be a number in [0, 1], got {lam!r}.")
    values = values.detach().to(rewards.dtype)
    next_values = next_values.detach().to(rewards.dtype)
    deltas = rewards + gamma * not_term * next_values - values
    decay = (gamma * lam) * cont
    advantages = torch.empty_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = deltas[t] + decay[t] * running
        advantages[t] = running
    return advantages, advantages + values


def normalize_advantages(advantages: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-8) -> torch.Tensor:
    """Standardise advantages over the valid entries: (A − mean) / (std + eps); masked entries become 0.

    Per-minibatch standardisation as in PPO implementations: it changes the gradient's scale, not its
    direction in expectation, and makes one learning rate work across reward scales.
    """
    check_tensor("advantages", advantages)
    check_positive("eps", eps)
    m = as_mask(mask, advantages.shape)
    if m is None:
        mean = advantages.mean()
        std = advantages.std(unbiased=False)
    else:
        n = m.sum().clamp_min(1)
        zero = torch.zeros((), dtype=advantages.dtype, device=advantages.device)
        mean = torch.where(m, advantages, zero).sum() / n
        std = (torch.where(m, (advantages - mean) ** 2, zero).sum() / n).sqrt()
    out = (advantages - mean) / (std + eps)
    return out if m is None else torch.where(m, out, torch.zeros((), dtype=out.dtype, device=out.device))
