"""Adapters: sequential decision problems from other domains, built on rlcore's batched environment contract
and its shared objectives (``rlcore.objectives``), loops and checkpoints.

* :mod:`rlcore.adapters.slate`: slate recommendation with a user-choice model (PASTA, SlateQ);
* :mod:`rlcore.adapters.dialogue`: dialogue management over a mixture of expert generators (MoE-LM, ICER);
* :mod:`rlcore.adapters.retrieval`: fan-out retrieval with set-level rewards over a vector index (R4T).

Submodules are imported on first use (``from rlcore.adapters import slate``), so importing this package
costs nothing.
"""

from __future__ import annotations

import importlib
from typing import Any

ADAPTERS = ("slate", "dialogue", "retrieval")


def __getattr__(name: str) -> Any:
    if name in ADAPTERS:
        return importlib.import_module(f"rlcore.adapters.{name}")
    raise AttributeError(f"module 'rlcore.adapters' has no attribute {name!r}; adapters: {', '.join(ADAPTERS)}.")


__all__ = list(ADAPTERS)
