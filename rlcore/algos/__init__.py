"""Algorithms, registered by name for the CLI and for :func:`rlcore.algos.get`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rlcore.algos import caql, ppo, rwr, sac, vmbpo


@dataclass(frozen=True)
class Algorithm:
    name: str
    config_cls: type
    train: Callable[[Any], Any]
    make_agent: Callable[[Any, Any], Any]


ALGORITHMS: dict[str, Algorithm] = {
    "caql": Algorithm("caql", caql.CAQLConfig, caql.train, caql.make_agent),
    "sac": Algorithm("sac", sac.SACConfig, sac.train, sac.make_agent),
    "vmbpo": Algorithm("vmbpo", vmbpo.VMBPOConfig, vmbpo.train, vmbpo.make_agent),
    "ppo": Algorithm("ppo", ppo.PPOConfig, ppo.train, ppo.make_agent),
    "rwr": Algorithm("rwr", rwr.RWRConfig, rwr.train, rwr.make_agent),
}


def get(name: str) -> Algorithm:
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; available: {', '.join(sorted(ALGORITHMS))}.")
    return ALGORITHMS[name]
