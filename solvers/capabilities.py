"""What a max-Q solver declares it can do, so that callers never guess from attribute names.

Every built-in solver class has a ``capabilities`` class attribute; :func:`capabilities_of` reads it,
and gives a solver that declares none (a user's) the conservative answer: nothing is assumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SolverCapabilities:
    """Declared abilities of a max-Q solver. Every field defaults to ``False`` (nothing is assumed)."""

    exact: bool = False
    """Returns certified upper bounds (``upper_bounds`` below ``+inf``) and can prove optimality."""
    gap: bool = False
    """Takes an absolute optimality gap; the ``tolerance`` argument of ``solve`` then means that gap."""
    time_limit: bool = False
    """Honours a ``time_limit`` option: wall-clock seconds for a whole ``solve`` call."""
    warm_start: bool = False
    """Uses the ``warm_start`` argument of ``solve`` (otherwise it is accepted and ignored)."""
    rng_state: bool = False
    """Carries random state across calls, with ``get_rng_state()`` / ``set_rng_state(state)`` to save and
    restore it for an exact resume. ``False`` for a solver whose calls are deterministic or re-seeded."""
    max_action_dim: int | None = None
    """The largest action dimension the solver takes (``pwl1d``: 1); ``None``: any."""


HEURISTIC = SolverCapabilities(warm_start=True, rng_state=True)
"""Gradient ascent and CEM: no certificate, a stopping tolerance, random starts from an owned generator."""
EXACT = SolverCapabilities(exact=True, gap=True, time_limit=True, warm_start=True)
"""Branch-and-bound and the MIP solvers (their inner gradient ascent is re-seeded on every call)."""


def capabilities_of(solver: Any) -> SolverCapabilities:
    """``solver.capabilities``, or ``SolverCapabilities()`` (all ``False``) for a solver that declares none."""
    declared = getattr(solver, "capabilities", None)
    if declared is None:
        return SolverCapabilities()
    if not isinstance(declared, SolverCapabilities):
        raise TypeError(f"{type(solver).__name__}.capabilities must be a solvers.SolverCapabilities, "
                        f"got {type(declared).__name__}.")
    return declared
