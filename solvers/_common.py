"""Helpers shared by the solvers."""

from __future__ import annotations

import math
import time

import torch

from solvers.action_set import ActionSet
from solvers.relu_net import ReLUNet
from solvers.result import MaxQResult


class SeededSolver:
    """Owns a ``torch.Generator`` per device, seeded from ``seed``, with state save/restore."""

    seed: int

    def generator(self, device: torch.device) -> torch.Generator:
        generators = self.__dict__.setdefault("_generators", {})
        key = str(device)
        if key not in generators:
            generators[key] = torch.Generator(device=device).manual_seed(self.seed)
        return generators[key]

    def get_rng_state(self) -> dict[str, torch.Tensor]:
        return {key: g.get_state() for key, g in self.__dict__.get("_generators", {}).items()}

    def set_rng_state(self, state: dict[str, torch.Tensor]) -> None:
        for key, value in state.items():
            self.generator(torch.device(key)).set_state(value)


def prepare(net: ReLUNet, fixed_inputs: torch.Tensor, action_set: ActionSet,
            warm_start: torch.Tensor | None) -> tuple[torch.Tensor, ActionSet, torch.Tensor | None]:
    """Validate the inputs of ``solve`` and move them to the network's device."""
    x = net.check_inputs(fixed_inputs)
    aset = action_set.with_dim(net.action_dim).to(net.device)
    if warm_start is not None:
        if warm_start.shape != (x.shape[0], net.action_dim):
            raise ValueError(f"warm_start must have shape [{x.shape[0]}, {net.action_dim}], "
                             f"got {tuple(warm_start.shape)}.")
        if not torch.isfinite(warm_start).all():
            raise ValueError("warm_start contains NaN or infinite values.")
        warm_start = aset.project(warm_start.detach().to(x.device, x.dtype))
    return x, aset, warm_start


def begin_solve(net: ReLUNet, fixed_inputs: torch.Tensor, action_set: ActionSet, warm_start: torch.Tensor | None,
                time_limit: float, default_gap: float, tolerance: float | None
                ) -> tuple[float, Deadline, torch.Tensor, ActionSet, torch.Tensor | None, float]:
    """Start the clock, check the inputs (:func:`prepare`) and resolve the gap, as every exact solver does:
    ``(start_time, deadline, x, action_set, warm_start, gap)``."""
    start_time = time.perf_counter()
    deadline = Deadline.after(time_limit, start_time)
    x, aset, warm = prepare(net, fixed_inputs, action_set, warm_start)
    return start_time, deadline, x, aset, warm, resolve_gap(default_gap, tolerance)


def best_per_sample(actions: torch.Tensor, values: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """From candidates laid out as ``[batch * K, A]`` and ``[batch * K]``, keep each sample's best."""
    values = values.reshape(batch, -1)
    best = values.argmax(dim=1)
    rows = torch.arange(batch, device=values.device)
    return actions.reshape(batch, values.shape[1], -1)[rows, best], values[rows, best]


def resolve_gap(default: float, tolerance: float | None) -> float:
    """The absolute gap of one ``solve`` call: ``tolerance`` when given (dynamic tolerance), else ``default``."""
    gap = default if tolerance is None else float(tolerance)
    if not gap >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}.")
    return gap


def empty_result(x: torch.Tensor, action_dim: int, start_time: float) -> MaxQResult:
    """The answer for an empty batch (``x`` of shape ``[0, F]``): tensors with no rows, in ``x``'s dtype."""
    values = torch.empty(0, dtype=x.dtype, device=x.device)
    return MaxQResult(torch.empty(0, action_dim, dtype=x.dtype, device=x.device), values, values.clone(),
                      torch.empty(0, dtype=torch.int8, device=x.device), time.perf_counter() - start_time)


class Deadline:
    """A point on the ``time.perf_counter`` clock; ``Deadline(None)`` never expires."""

    def __init__(self, at: float | None) -> None:
        self.at = math.inf if at is None else float(at)

    @classmethod
    def after(cls, seconds: float, start: float | None = None) -> Deadline:
        return cls((time.perf_counter() if start is None else start) + seconds)

    def remaining(self) -> float:
        return self.at - time.perf_counter()

    def expired(self) -> bool:
        return time.perf_counter() >= self.at
