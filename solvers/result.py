"""What every max-Q solver returns."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import torch


class SolveStatus(IntEnum):
    """Per-sample outcome of a max-Q solve."""

    OPTIMAL = 0
    """Proven optimal within the solver's tolerance."""
    GAP_LIMIT = 1
    """Stopped with a proven gap at or below the requested gap."""
    TIME_LIMIT = 2
    """Stopped by a time or node limit; the action is the best incumbent, the bound is still valid."""
    APPROXIMATE = 3
    """A heuristic answer with no optimality certificate (gradient ascent, CEM)."""
    LOST = 4
    """The worker solving this sample died (a crashed process, a lost Ray node) and its retries ran out: the
    action is the incumbent (the warm start, e.g. the action function's action, where one was given) and the
    bound is the relaxation's."""


@dataclass
class MaxQResult:
    """The answer to ``max_{a in A} Q(x_b, a)`` for a batch of fixed inputs ``x_b``."""

    actions: torch.Tensor
    """Maximising actions, ``[B, A]``, always inside the action set."""
    values: torch.Tensor
    """``Q(x_b, actions_b)``, ``[B]``."""
    upper_bounds: torch.Tensor
    """A valid upper bound on the maximum, ``[B]``; ``+inf`` where the solver proves none."""
    status: torch.Tensor
    """Per-sample :class:`SolveStatus` codes, ``[B]`` (int8)."""
    solve_seconds: float
    """Wall-clock seconds for the whole batch."""

    @property
    def gaps(self) -> torch.Tensor:
        """Certified gap ``upper_bound - value`` per sample (``inf`` for heuristic solvers)."""
        return self.upper_bounds - self.values

    def status_counts(self) -> dict[str, int]:
        """How many samples ended in each status, e.g. ``{"optimal": 60, "time_limit": 4}``."""
        counts = torch.bincount(self.status.long().cpu(), minlength=len(SolveStatus))
        return {status.name.lower(): int(counts[status]) for status in SolveStatus}
