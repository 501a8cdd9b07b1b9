"""Action sets shared by the max-Q solvers and the environments.

An :class:`ActionSet` is a convex set of actions, one of

* a box ``{a : low <= a <= high}``,
* an l2 ball ``{a : ||a - center||_2 <= radius}``,
* an l1 ball ``{a : ||a - center||_1 <= radius}``.

All operations are batched over a leading dimension and run on the set's
device. The set is immutable; :meth:`to` returns a copy on another device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

SetKind = Literal["box", "l2_ball", "l1_ball"]


def _as_vector(value: float | torch.Tensor | list[float], name: str, dim: int | None = None) -> torch.Tensor:
    tensor = torch.as_tensor(value, dtype=torch.float32).detach().clone()
    if tensor.ndim == 0:
        if dim is None:
            raise ValueError(f"{name} is a scalar; give `dim` so its shape is known (got {value!r}).")
        tensor = tensor.expand(dim).clone()
    if tensor.ndim != 1:
        raise ValueError(f"{name} must be a scalar or a 1-D vector, got shape {tuple(tensor.shape)}.")
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} must be finite, got {tensor.tolist()}.")
    return tensor


@dataclass(frozen=True, eq=False)
class ActionSet:
    """A box, l2 ball or l1 ball of actions. Build it with :meth:`box`, :meth:`l2_ball` or :meth:`l1_ball`."""

    kind: SetKind
    low: torch.Tensor
    """Lower corner of the set's bounding box, shape ``[dim]``."""
    high: torch.Tensor
    """Upper corner of the set's bounding box, shape ``[dim]``."""
    center: torch.Tensor
    """Centre of the set, shape ``[dim]``."""
    radius: float
    """Radius for balls; 0 for boxes."""
    broadcast: bool = False
    """Built from scalars: :meth:`with_dim` stretches it to an environment's action dimension."""

    # ---------------------------------------------------------------- builders
    @classmethod
    def box(cls, low: float | torch.Tensor | list[float], high: float | torch.Tensor | list[float],
            dim: int | None = None) -> ActionSet:
        """The box ``[low, high]``; scalar bounds need ``dim`` (or are broadcast by :meth:`with_dim`)."""
        low_t = torch.as_tensor(low, dtype=torch.float32)
        high_t = torch.as_tensor(high, dtype=torch.float32)
        if dim is None and low_t.ndim == 0 and high_t.ndim == 0:
            dim = 1  # a scalar box until `with_dim` broadcasts it to an environment's action dimension
            scalar = True
        else:
            scalar = False
        if dim is None:
            dim = int((low_t if low_t.ndim else high_t).shape[0])
        low_v, high_v = _as_vector(low_t, "low", dim), _as_vector(high_t, "high", dim)
        if low_v.shape != high_v.shape:
            raise ValueError(f"box low and high must have the same shape, got {tuple(low_v.shape)} and "
                             f"{tuple(high_v.shape)}.")
        if (low_v > high_v).any():
            raise ValueError(f"box needs low <= high in every dimension, got low={low_v.tolist()} "
                             f"high={high_v.tolist()}.")
        return cls("box", low_v, high_v, (low_v + high_v) / 2, 0.0, scalar)

    @classmethod
    def l2_ball(cls, center: float | torch.Tensor | list[float], radius: float, dim: int | None = None) -> ActionSet:
        """The Euclidean ball of ``radius`` around ``center``."""
        return cls._ball("l2_ball", center, radius, dim)

    @classmethod
    def l1_ball(cls, center: float | torch.Tensor | list[float], radius: float, dim: int | None = None) -> ActionSet:
        """The l1 ball (cross-polytope) of ``radius`` around ``center``."""
        return cls._ball("l1_ball", center, radius, dim)

    @classmethod
    def _ball(cls, kind: SetKind, center, radius: float, dim: int | None) -> ActionSet:
        radius = float(radius)
        if not radius >= 0 or radius == float("inf"):
            raise ValueError(f"{kind} radius must be finite and >= 0, got {radius}.")
        c = torch.as_tensor(center, dtype=torch.float32)
        scalar = c.ndim == 0 and dim is None
        c = _as_vector(c, "center", 1 if scalar else dim)
        return cls(kind, c - radius, c + radius, c, radius, scalar)

    # ------------------------------------------------------------- properties
    @property
    def dim(self) -> int:
        return int(self.center.shape[0])

    @property
    def device(self) -> torch.device:
        return self.center.device

    @property
    def half_width(self) -> torch.Tensor:
        """Half the bounding box's width per dimension: the natural step scale of the set."""
        return (self.high - self.low) / 2

    def to(self, device: torch.device | str) -> ActionSet:
        return ActionSet(self.kind, self.low.to(device), self.high.to(device), self.center.to(device),
                         self.radius, self.broadcast)

    def with_dim(self, dim: int) -> ActionSet:
        """Broadcast a set built from scalars to ``dim`` dimensions; check the dimension otherwise."""
        if self.broadcast and dim != 1:
            if self.kind == "box":
                return ActionSet.box(self.low.expand(dim), self.high.expand(dim)).to(self.device)
            return ActionSet._ball(self.kind, self.center.expand(dim), self.radius, None).to(self.device)
        if self.dim != dim:
            raise ValueError(f"action set has dimension {self.dim}, but the actions have dimension {dim}.")
        return self

    def unit(self) -> ActionSet:
        """The set in its own coordinates ``(a - center) / half_width``: ``[-1, 1]^dim`` for a box, the unit ball
        of the same norm for a ball."""
        if self.kind == "box":
            return ActionSet.box(-1.0, 1.0, dim=self.dim).to(self.device)
        return ActionSet._ball(self.kind, torch.zeros(self.dim), 1.0, None).to(self.device)

    def intersect_box(self, low: torch.Tensor, high: torch.Tensor) -> ActionSet:
        """For a box, its intersection with ``[low, high]``; balls are returned unchanged."""
        if self.kind != "box":
            return self
        new_low = torch.maximum(self.low, low.to(self.device, torch.float32))
        new_high = torch.minimum(self.high, high.to(self.device, torch.float32))
        if (new_low > new_high).any():
            raise ValueError(f"action set box [{self.low.tolist()}, {self.high.tolist()}] does not meet the "
                             f"environment's native action box [{low.tolist()}, {high.tolist()}].")
        return ActionSet.box(new_low, new_high).to(self.device)

    def __repr__(self) -> str:
        if self.kind == "box":
            return f"ActionSet.box(low={self.low.tolist()}, high={self.high.tolist()})"
        return f"ActionSet.{self.kind}(center={self.center.tolist()}, radius={self.radius})"

    # ------------------------------------------------------------- operations
    def _check(self, actions: torch.Tensor) -> torch.Tensor:
        if actions.ndim != 2 or actions.shape[1] != self.dim:
            raise ValueError(f"actions must have shape [batch, {self.dim}], got {tuple(actions.shape)}.")
        return actions

    def project(self, actions: torch.Tensor) -> torch.Tensor:
        """Euclidean projection of ``actions[B, dim]`` onto the set."""
        actions = self._check(actions)
        low, high, center = (t.to(actions.device, actions.dtype) for t in (self.low, self.high, self.center))
        if self.kind == "box":
            return torch.minimum(torch.maximum(actions, low), high)
        offset = actions - center
        if self.kind == "l2_ball":
            norm = offset.norm(dim=1, keepdim=True)
            scale = torch.clamp(self.radius / norm.clamp_min(1e-12), max=1.0)
            return center + offset * scale
        return center + _project_l1_ball(offset, self.radius)

    def contains(self, actions: torch.Tensor, atol: float = 1e-5) -> torch.Tensor:
        """Boolean ``[B]``: whether each action lies in the set (up to ``atol``)."""
        actions = self._check(actions)
        low, high, center = (t.to(actions.device, actions.dtype) for t in (self.low, self.high, self.center))
        if self.kind == "box":
            return ((actions >= low - atol) & (actions <= high + atol)).all(dim=1)
        order = 2 if self.kind == "l2_ball" else 1
        return (actions - center).norm(p=order, dim=1) <= self.radius + atol

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` actions drawn uniformly from the set, shape ``[n, dim]``, on the set's device."""
        device, dim = self.device, self.dim
        if self.kind == "box":
            u = torch.rand(n, dim, generator=generator, device=device)
            return self.low + u * (self.high - self.low)
        if self.kind == "l2_ball":
            direction = torch.randn(n, dim, generator=generator, device=device)
            direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
            r = torch.rand(n, 1, generator=generator, device=device) ** (1.0 / dim)
            return self.center + self.radius * r * direction
        # Uniform in the cross-polytope: normalised exponentials with one slack coordinate, random signs.
        e = -torch.log(torch.rand(n, dim + 1, generator=generator, device=device).clamp_min(1e-12))
        point = e[:, :dim] / e.sum(dim=1, keepdim=True)
        signs = torch.randint(0, 2, (n, dim), generator=generator, device=device) * 2 - 1
        return self.center + self.radius * point * signs

    def state(self) -> dict:
        """A plain description that :meth:`from_state` turns back into the set (used in configs/checkpoints)."""
        return {"kind": self.kind, "low": self.low.tolist(), "high": self.high.tolist(),
                "center": self.center.tolist(), "radius": self.radius}

    @classmethod
    def from_state(cls, state: dict) -> ActionSet:
        if state["kind"] == "box":
            return cls.box(state["low"], state["high"])
        return cls._ball(state["kind"], state["center"], state["radius"], None)


def _project_l1_ball(offset: torch.Tensor, radius: float) -> torch.Tensor:
    """Sort-based projection onto ``{x : ||x||_1 <= radius}`` (Duchi et al., 2008), batched."""
    if radius == 0:
        return torch.zeros_like(offset)
    magnitude = offset.abs()
    inside = magnitude.sum(dim=1, keepdim=True) <= radius
    sorted_mag, _ = torch.sort(magnitude, dim=1, descending=True)
    cumulative = sorted_mag.cumsum(dim=1) - radius
    index = torch.arange(1, offset.shape[1] + 1, device=offset.device, dtype=offset.dtype)
    condition = sorted_mag - cumulative / index > 0
    rho = condition.to(offset.dtype).mul(index).argmax(dim=1, keepdim=True)
    theta = cumulative.gather(1, rho) / (rho + 1).to(offset.dtype)
    projected = torch.sign(offset) * (magnitude - theta).clamp_min(0)
    return torch.where(inside, offset, projected)
