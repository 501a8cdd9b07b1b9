"""Max-Q optimisers over ReLU networks: ``max_{a in A} Q(x, a)`` for a batch of fixed inputs ``x``.

This package knows nothing of reinforcement learning. A solver takes a :class:`ReLUNet`, a batch of
fixed inputs and an :class:`ActionSet`, and returns a :class:`MaxQResult` (argmax actions, values,
upper bounds, per-sample status)::

    import solvers
    net = solvers.ReLUNet.from_torch(q_network, fixed_dim=state_dim)
    result = solvers.make("ga").solve(net, states, solvers.ActionSet.box(-1.0, 1.0, dim=3))
    solvers.capabilities_of(solvers.make("bnb")).exact   # True: certified bounds
"""

from solvers import bnb, cem, gradient_ascent, mip_solver, portfolio, pwl1d  # noqa: F401  (registers "bnb", "cem", "ga", "exact", "pwl1d", the MIPs)
from solvers.action_set import ActionSet
from solvers.capabilities import SolverCapabilities, capabilities_of
from solvers.registry import MaxQSolver, available, make, register
from solvers.relu_net import ReLUNet
from solvers.result import MaxQResult, SolveStatus

__all__ = ["ActionSet", "MaxQResult", "MaxQSolver", "ReLUNet", "SolveStatus", "SolverCapabilities", "available",
           "capabilities_of", "make", "register"]
