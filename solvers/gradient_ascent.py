"""Batched projected gradient ascent on ``a -> Q(x, a)`` (CAQL's "GA" max-Q optimiser).

Every sample runs ``num_starts`` uniform random starts plus one informed start (the warm start when
given, else the set's centre) at once as one ``[B, K, A]`` batch. Each step moves by ``step_size``
half-widths of the set along the start's own normalised gradient, then projects back onto the set, so
actions never leave it.

The gradient is computed in closed form, not by autograd: for a ReLU network
``Q = w_L^T relu(W_{L-1} ... relu(W_a a + c(x)))``, ``dQ/da = W_a^T D_1 W_2^T D_2 ... w_L`` with
``D_l`` the 0/1 activation pattern at ``a``. One forward pass that keeps the patterns gives the value
and the gradient together, so a step costs one forward and one backward of matrix products, with no
graph, and the state part of the first layer is folded into a per-sample bias once per solve.

Each start stops moving once its value changed by at most ``tolerance`` over 4 steps (a per-start mask,
checked every 4 steps, so nothing waits on the device to decide it); on the CPU the loop also ends when
every start has stopped, which changes no result.

Defaults: 1 informed + 3 uniform starts and 20 steps, the setting the CAQL spec (section 1.8) measured
as enough for learning; steps start at half a half-width and shrink by 0.8 per step (2.5 half-widths
of travel in all, so a start can cross the set to a far corner; on multimodal random nets this halved
the mean gap of the former 0.2 / 0.85 schedule at the same cost).
The public CAQL code divided by the norm of the *whole batch's* gradient, which shrinks every
sample's step as the batch grows; here the normalisation is per start.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import torch

from solvers._common import Deadline, SeededSolver, best_per_sample, empty_result, prepare
from solvers.action_set import ActionSet
from solvers.capabilities import HEURISTIC, SolverCapabilities
from solvers.registry import register
from solvers.relu_net import ReLUNet
from solvers.result import MaxQResult, SolveStatus


def value_and_action_gradient(weights: list[torch.Tensor], biases: list[torch.Tensor],
                              actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``Q`` and ``dQ/da`` of a folded ReLU network (see :meth:`ReLUNet.fold_fixed_inputs`) at ``actions``.

    ``actions`` is ``[N, A]`` and ``biases[0]`` the first-layer bias of each row, ``[N, h_1]``. Returns values
    ``[N]`` and gradients ``[N, A]``. Where a pre-activation is exactly 0 the gradient takes the ReLU's
    derivative there as 0, as autograd does.
    """
    pre = torch.addmm(biases[0], actions, weights[0].T)
    patterns = []
    for weight, bias in zip(weights[1:], biases[1:], strict=True):
        active = pre > 0
        patterns.append(active)
        pre = torch.addmm(bias, pre * active, weight.T)
    gradient = weights[-1]
    for weight, active in zip(reversed(weights[:-1]), reversed(patterns), strict=True):
        gradient = (gradient * active) @ weight
    return pre.squeeze(1), gradient


STOP_CHECK_EVERY = 4
"""Steps between the per-start stopping checks of gradient ascent."""


@register("ga")
@dataclass
class GradientAscentSolver(SeededSolver):
    """Projected gradient ascent with random restarts; returns the best point seen per sample."""

    num_starts: int = 3
    """Uniform random starts per sample, in addition to the warm start (or the set's centre without one)."""
    iterations: int = 20
    """Ascent steps."""
    step_size: float = 0.5
    """First step length, as a fraction of the set's half-width per dimension."""
    step_decay: float = 0.8
    """Multiplier on the step length after every step."""
    tolerance: float = 1e-4
    """A start stops once its Q-value changed by at most this over the last 4 steps (checked every 4 steps)."""
    seed: int = 0
    """Seed of the generator that draws the random starts."""
    name: str = "ga"
    capabilities: ClassVar[SolverCapabilities] = HEURISTIC

    def __post_init__(self) -> None:
        if self.num_starts < 0 or self.iterations < 0 or self.step_size <= 0:
            raise ValueError("ga needs num_starts >= 0, iterations >= 0 and step_size > 0, got "
                             f"{self.num_starts}, {self.iterations}, {self.step_size}.")

    def solve(self, net: ReLUNet, fixed_inputs: torch.Tensor, action_set: ActionSet,
              warm_start: torch.Tensor | None = None, tolerance: float | None = None) -> MaxQResult:
        start_time = time.perf_counter()
        x, aset, warm = prepare(net, fixed_inputs, action_set, warm_start)
        if x.shape[0] == 0:
            return empty_result(x, net.action_dim, start_time)
        final_actions, final_values = self.ascend(net, x, aset, warm, tolerance)
        return MaxQResult(
            actions=final_actions,
            values=final_values,
            upper_bounds=torch.full_like(final_values, float("inf")),
            status=torch.full((x.shape[0],), int(SolveStatus.APPROXIMATE), dtype=torch.int8, device=x.device),
            solve_seconds=time.perf_counter() - start_time,
        )

    @torch.no_grad()
    def ascend(self, net: ReLUNet, x: torch.Tensor, aset: ActionSet, warm: torch.Tensor | None = None,
               tolerance: float | None = None, deadline: Deadline | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The best action and value per row of prepared inputs (see :func:`~solvers._common.prepare`).

        ``deadline`` (for the exact solvers' incumbents) stops the ascent early, after at least the
        evaluation of the starts, so the answer is always a feasible point of the set.
        """
        batch, dim = x.shape[0], net.action_dim
        tol = self.tolerance if tolerance is None else tolerance
        starts = 1 + self.num_starts
        informed = warm if warm is not None else aset.center.to(x.dtype).expand(batch, dim)
        uniform = aset.sample(batch * self.num_starts, self.generator(x.device)).to(x.dtype)
        # Rows are laid out sample-major, [B * K, A], so that best_per_sample can pick each sample's best.
        actions = torch.cat([informed.unsqueeze(1), uniform.reshape(batch, self.num_starts, dim)], dim=1)
        actions = actions.reshape(-1, dim)

        # Ascend in the set's own coordinates u, a = centre + half_width * u, so that every dimension moves by
        # a comparable fraction of its width: the box becomes [-1, 1]^A and a ball the unit ball. The change of
        # variables is folded into the first layer, so a step costs no extra arithmetic.
        centre, scale = aset.center.to(x.dtype), aset.half_width.to(x.dtype)
        weights, biases = net.fold_fixed_inputs(x)
        first_bias = (biases[0] + centre @ weights[0].T).repeat_interleave(starts, dim=0)
        weights, biases = [weights[0] * scale, *weights[1:]], [first_bias, *biases[1:]]
        if aset.kind == "box":
            def project(points: torch.Tensor) -> torch.Tensor:
                return points.clamp(-1.0, 1.0)
        else:
            project = aset.unit().project
        points = (actions - centre) / torch.where(scale > 0, scale, 1.0)  # a zero-width dimension stays at 0

        values, gradient = value_and_action_gradient(weights, biases, points)
        best_points, best_values, checked_values = points, values, values
        moving = torch.ones_like(points[:, :1])  # 1 while a start moves, 0 once it has stopped
        step = self.step_size
        for iteration in range(self.iterations):
            if deadline is not None and deadline.expired():
                break
            norm = gradient.norm(dim=1, keepdim=True).clamp_min(1e-12)
            points = project(torch.addcdiv(points, moving * gradient, norm, value=step))
            new_values, gradient = value_and_action_gradient(weights, biases, points)
            improved = (new_values > best_values).unsqueeze(1)
            best_points = torch.where(improved, points, best_points)
            best_values = torch.maximum(new_values, best_values)
            step *= self.step_decay
            if iteration % STOP_CHECK_EVERY == STOP_CHECK_EVERY - 1:
                # A start stops once its value moved by at most the tolerance over the last few steps. Checked
                # every few steps only: the check costs as much as a third of a step.
                moving = moving * ((new_values - checked_values).abs() > tol).unsqueeze(1)
                checked_values = new_values
                # A stopped start no longer changes, so ending early only saves time; on an accelerator the
                # check would wait on the device, so there the loop runs to the end.
                if x.device.type == "cpu" and not bool(moving.any()):
                    break

        final_points, _ = best_per_sample(best_points, best_values, batch)
        # Back to actions; the projection only removes rounding, so the answer is inside the set exactly.
        final_actions = aset.project(centre + scale * final_points)
        # The value of the returned action itself (the folded coordinates differ from it by rounding), so that an
        # exact solver's incumbent is a value the network really takes.
        final_values = net(x, final_actions)
        return final_actions, final_values
