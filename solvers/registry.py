"""The table of max-Q solvers that :func:`make` reads.

A solver is any object with ``solve(net, fixed_inputs, action_set, warm_start=None, tolerance=None)
-> MaxQResult``. Register a factory with :func:`register` to make it available by name everywhere
(the CAQL config, the CLI, the benchmarks).

A solver declares what it can do in a ``capabilities`` class attribute, a
:class:`~solvers.capabilities.SolverCapabilities` (``exact``, ``gap``, ``time_limit``, ``warm_start``,
``rng_state``). Callers read it through :func:`~solvers.capabilities.capabilities_of`, which gives a
solver that declares nothing the conservative answer (every field ``False``), never a guess from its
attribute names:

========== ======= ===== ========== ========== =========
solver     exact   gap   time_limit warm_start rng_state
========== ======= ===== ========== ========== =========
ga, cem    no      no    no         yes        yes
pwl1d      yes     no    no         no         no
bnb        yes     yes   yes        yes        no
scip, ...  yes     yes   yes        yes        no
========== ======= ===== ========== ========== =========

``bnb`` and the MIP solvers run their inner gradient ascent from a generator seeded afresh on every call,
so their calls are reproducible without saving any state. Every built-in solver accepts an empty batch
(``fixed_inputs`` of shape ``[0, F]``) and returns an empty :class:`MaxQResult`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Protocol

import torch

from solvers.action_set import ActionSet
from solvers.capabilities import SolverCapabilities
from solvers.relu_net import ReLUNet
from solvers.result import MaxQResult


class MaxQSolver(Protocol):
    """What a registered solver provides."""

    name: str
    capabilities: SolverCapabilities
    """What the solver can do (see the module docstring). Optional for your own solvers: read it through
    :func:`solvers.capabilities_of`, which treats a solver without it as having no capabilities."""

    def solve(
        self,
        net: ReLUNet,
        fixed_inputs: torch.Tensor,
        action_set: ActionSet,
        warm_start: torch.Tensor | None = None,
        tolerance: float | None = None,
    ) -> MaxQResult:
        """Maximise ``net`` over ``action_set`` for each row of ``fixed_inputs[B, F]``.

        ``warm_start[B, A]`` is an optional initial guess (for example an actor's action);
        ``tolerance`` overrides the solver's stopping tolerance (heuristics) or absolute gap (solvers with
        ``capabilities.gap``) for this call. ``B`` may be 0.
        """
        ...


_SOLVERS: dict[str, Callable[..., MaxQSolver]] = {}


def register(name: str) -> Callable[[Callable[..., MaxQSolver]], Callable[..., MaxQSolver]]:
    """Decorator: ``@register("mysolver")`` on a class or factory taking keyword options."""

    def decorator(factory: Callable[..., MaxQSolver]) -> Callable[..., MaxQSolver]:
        if name in _SOLVERS and _SOLVERS[name] is not factory:
            raise ValueError(f"a max-Q solver named {name!r} is already registered.")
        _SOLVERS[name] = factory
        return factory

    return decorator


def available() -> list[str]:
    """Names of the registered solvers."""
    return sorted(_SOLVERS)


def make(name: str, **options) -> MaxQSolver:
    """Build the solver registered as ``name`` with keyword ``options``."""
    if name not in _SOLVERS:
        raise ValueError(f"unknown max-Q solver {name!r}; registered solvers: {', '.join(available())}.")
    accepted = _options_of(_SOLVERS[name])
    unknown = sorted(set(options) - accepted) if accepted is not None else []
    if unknown:
        raise ValueError(f"bad options for max-Q solver {name!r}: no option(s) {', '.join(unknown)}; its options: "
                         f"{', '.join(sorted(accepted)) or 'none'}.")
    try:
        return _SOLVERS[name](**options)
    except TypeError as error:
        raise ValueError(f"bad options for max-Q solver {name!r}: {error}") from error


def _options_of(factory: Callable[..., MaxQSolver]) -> set[str] | None:
    """The keyword options ``factory`` takes, or None when it takes any (``**kwargs``). A solver's ``name``
    field is its registry key, not an option."""
    parameters = inspect.signature(factory).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters if p.name != "name" and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                                          inspect.Parameter.KEYWORD_ONLY)}
