"""CAQL's accelerations of the max-Q step (Ryu et al., 2020, section 4; spec section 1.4).

Three ways to pose fewer or cheaper max-Q problems per update, each a pure function:

* :func:`dynamic_tolerance`: ``tol = clip(tau0 * RMSE_TD * decay^k, tol_min, tol_max)``: loose solves
  while the Q-function is still far from its fixed point, tight ones later.
* :func:`dual_filter`: a sample whose optimistic target ``r + gamma (1 - d) UB(s')`` does not exceed
  ``Q(s, a)`` cannot activate the hinge (LP) loss, so its max-Q need not be solved; it keeps
  ``UB(s')`` as its next-state value. Exact for the hinge loss, an approximation for the squared loss.
* :func:`farthest_first_clusters` and :func:`taylor_estimates`: solve max-Q only at cluster centres
  among the remaining next states and give every other state the first-order Taylor estimate of its
  centre's value, capped by its own upper bound.

Deviations from the public code: a fully filtered batch keeps its upper bounds (the code set them
to 0), and the clipped double-Q minimum is applied on the filtered path too (the code skipped it).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def dynamic_tolerance(td_rmse: float, k: int, init: float, decay: float, tol_min: float, tol_max: float) -> float:
    """``clip(init * td_rmse * decay**k, tol_min, tol_max)``."""
    return float(min(max(init * td_rmse * decay**k, tol_min), tol_max))


def dual_filter(rewards: torch.Tensor, terminated: torch.Tensor, next_upper: torch.Tensor, q_values: torch.Tensor,
                gamma: float) -> torch.Tensor:
    """Boolean ``[B]``: samples whose max-Q must be solved, ``r + gamma (1 - d) UB(s') > Q(s, a)``.

    A terminal sample never needs its next-state value, so it is always filtered out.
    """
    optimistic = rewards + gamma * (1.0 - terminated) * next_upper
    return (optimistic > q_values) & (terminated < 0.5)


def farthest_first_clusters(points: torch.Tensor, radius: float,
                            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy k-centre clustering (farthest-first traversal) until every point is within ``radius``.

    Returns ``(centres, assignment)``: indices of the centre points ``[C]`` and, for each point, the
    index (into ``points``) of its nearest centre ``[N]``. The first centre is drawn with ``generator``.
    """
    n = points.shape[0]
    if n == 0:
        empty = torch.zeros(0, dtype=torch.long, device=points.device)
        return empty, empty
    first = int(torch.randint(0, n, (1,), generator=generator, device=generator.device if generator else None))
    centres = [first]
    distance = (points - points[first]).norm(dim=1)
    nearest = torch.full((n,), first, dtype=torch.long, device=points.device)
    while True:
        farthest = int(distance.argmax())
        # Stop once every point is within the radius (or is a centre itself, for radius 0).
        if distance[farthest] < radius or distance[farthest] == 0:
            break
        centres.append(farthest)
        new_distance = (points - points[farthest]).norm(dim=1)
        closer = new_distance < distance
        nearest = torch.where(closer, torch.full_like(nearest, farthest), nearest)
        distance = torch.minimum(distance, new_distance)
    return torch.tensor(centres, dtype=torch.long, device=points.device), nearest


def taylor_estimates(q_function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], centre_states: torch.Tensor,
                     centre_actions: torch.Tensor, states: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """``min(Q(c, a*_c) + grad_s Q(c, a*_c) . (x - c), UB(x))`` for states ``x`` with centres ``c``.

    ``centre_states[i]`` and ``centre_actions[i]`` are the centre of ``states[i]`` and its maximiser;
    ``upper[i]`` an upper bound on ``max_a Q(states[i], a)``.
    """
    with torch.enable_grad():
        c = centre_states.detach().requires_grad_(True)
        value = q_function(c, centre_actions.detach())
        (gradient,) = torch.autograd.grad(value.sum(), c)
    estimate = value.detach() + (gradient * (states - centre_states)).sum(dim=1)
    return torch.minimum(estimate, upper)
