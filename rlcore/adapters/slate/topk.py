"""The best slate under SlateQ's decomposition, exactly, by repeated top-k (Dinkelbach); and brute force to check it.

With one conditional logit (item log-weights ``z_i``, no-choice log-weight ``b``, ``v = exp``) and item values
``Q_i`` (the value of the user picking ``i``; ``Q_∅`` of picking nothing), a slate's value is (Ie et al., 2019)

    Q(A) = (v_∅ Q_∅ + Σ_{i∈A} v_i Q_i) / (v_∅ + Σ_{i∈A} v_i),      |A| = m.

That is a ratio of two set functions that are linear in the items, so for any λ

    max_A [v_∅ (Q_∅ − λ) + Σ_{i∈A} v_i (Q_i − λ)]

is solved by the top ``m`` items by ``v_i (Q_i − λ)``, and it is ≥ 0 exactly when λ ≤ max_A Q(A). Dinkelbach's
iteration λ ← Q(top-m at λ) increases λ at every step and stops, after finitely many (a few in practice), at
λ* = max_A Q(A) with the top-m at λ* an optimal slate: an exact top-k on the decomposed value, not the
top-m-by-``v_i Q_i`` heuristic (which is not optimal in general). :func:`brute_force_slate` enumerates all
``C(I, m)`` slates, for tests on small pools.
"""

from __future__ import annotations

import itertools

import torch


def _weights(log_v: torch.Tensor, log_v0: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``v`` and ``v_∅`` scaled by a common per-row factor (the ratio is unchanged; exp cannot overflow)."""
    if mask is not None:
        log_v = log_v.masked_fill(~mask, -torch.inf)
    shift = torch.maximum(log_v.max(-1).values, log_v0).detach()
    return (log_v - shift[:, None]).exp(), (log_v0 - shift).exp()


def slate_value(q_items: torch.Tensor, q_null: torch.Tensor, log_v: torch.Tensor, log_v0: torch.Tensor,
                slate: torch.Tensor) -> torch.Tensor:
    """``Q(A)`` of the decomposition for slates ``[N, m]``: ``[N]``.

    Args:
        q_items: ``Q_i``, ``[N, I]``.
        q_null: ``Q_∅``, ``[N]``.
        log_v: ``z_i`` (``v_i = exp(z_i)``), ``[N, I]``.
        log_v0: ``b`` (``v_∅ = exp(b)``), ``[N]``.
        slate: item indices, ``[N, m]``.
    """
    v, v0 = _weights(log_v, log_v0, None)
    vs, qs = v.gather(1, slate), q_items.gather(1, slate)
    return (v0 * q_null + (vs * qs).sum(1)) / (v0 + vs.sum(1))


def best_slate(q_items: torch.Tensor, q_null: torch.Tensor, log_v: torch.Tensor, log_v0: torch.Tensor,
               slate_size: int, mask: torch.Tensor | None = None,
               max_iterations: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """The slate of ``slate_size`` distinct items that maximises ``Q(A)`` in every row, and its value.

    Args:
        q_items: ``Q_i``, ``[N, I]`` (as for :func:`slate_value`).
        q_null: ``Q_∅``, ``[N]``.
        log_v: ``z_i``, ``[N, I]``.
        log_v0: ``b``, ``[N]``.
        slate_size: m.
        mask: ``[N, I]`` bool of the items on offer (None: all); every row needs at least m.
        max_iterations: a safety cap; Dinkelbach stops long before on real inputs (a few iterations).

    Returns:
        ``(slate [N, m] int64, value [N])``; the slate's items are in decreasing order of their final score.
    """
    v, v0 = _weights(log_v, log_v0, mask)
    blocked = None if mask is None else ~mask

    def top(score: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if blocked is not None:
            score = score.masked_fill(blocked, -torch.inf)
        chosen = score.topk(slate_size, dim=1).indices
        vs, qs = v.gather(1, chosen), q_items.gather(1, chosen)
        return chosen, (v0 * q_null + (vs * qs).sum(1)) / (v0 + vs.sum(1))

    # λ starts at the value of a feasible slate (the top-m by v_i (Q_i − Q_∅)), so λ <= λ* from the start and
    # every iteration can only raise it.
    slate, lam = top(v * (q_items - q_null[:, None]))
    for _ in range(max_iterations):
        candidate, value = top(v * (q_items - lam[:, None]))
        gained = value > lam + 1e-9 * (1.0 + lam.abs())  # float rounding aside, no gain means λ = λ*
        if not gained.any():
            break
        slate = torch.where(gained[:, None], candidate, slate)
        lam = torch.where(gained, value, lam)
    value = lam
    return slate, value


def brute_force_slate(q_items: torch.Tensor, q_null: torch.Tensor, log_v: torch.Tensor, log_v0: torch.Tensor,
                      slate_size: int, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The same optimum by enumerating every slate (``C(I, m)`` of them: small pools only)."""
    n, num_items = q_items.shape
    combos = torch.tensor(list(itertools.combinations(range(num_items), slate_size)), device=q_items.device)
    values = torch.stack([slate_value(q_items, q_null, log_v, log_v0, c.expand(n, -1)) for c in combos], 1)
    if mask is not None:
        allowed = mask[:, combos].all(-1)  # [N, C]
        values = values.masked_fill(~allowed, -torch.inf)
    best = values.argmax(1)
    return combos[best], values.gather(1, best[:, None]).squeeze(1)


__all__ = ["best_slate", "brute_force_slate", "slate_value"]
