"""Where the adapters cache what the library trains itself (the MoE-LM, the diffusion test beds' denoisers).

Files live under ``$RLCORE_CACHE_DIR`` (default ``~/.cache/rlcore``)``/<adapter>/<name>-<hash>.pt``; the hash
covers every setting that changes the weights. Writes go to a temporary file renamed into place, so a crash
never leaves a half-written cache file; a file that does not load is retrained by its owner.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch


def cache_file(adapter: str, name: str, settings: dict[str, Any], cache_dir: str | Path | None = None) -> Path:
    """The cache path of ``name`` trained with ``settings`` (a JSON-serialisable dict)."""
    root = Path(cache_dir or os.environ.get("RLCORE_CACHE_DIR") or Path.home() / ".cache" / "rlcore")
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    return root / adapter / f"{name}-{digest[:16]}.pt"


def save_atomic(state: Any, path: Path) -> None:
    """``torch.save`` to ``path`` through a temporary file in the same folder and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


__all__ = ["cache_file", "save_atomic"]
