"""Checkpoints that hold everything needed to resume a run, written so that a crash never loses both copies.

A save writes ``checkpoint.pt.tmp``, flushes and fsyncs it, moves the current ``checkpoint.pt`` to
``checkpoint.prev.pt``, renames the new file into place and fsyncs the directory. So at any moment the run
directory holds a complete newest checkpoint or, while a save is under way or after it was cut short, a
complete previous one. :func:`load_latest_checkpoint` reads the newest one that loads and says in one line
why it skipped the other.
"""

from __future__ import annotations

import os
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

import rlcore

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "rlcore_version", "config", "step", "agent", "rng")
CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: missing, damaged, or of another format."""


def global_rng_state() -> dict[str, Any]:
    """The state of Python's, NumPy's and torch's global generators (CUDA included where present)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_global_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's and torch's global generators with ``seed``."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. directories cannot be opened on Windows
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(path: str | Path, payload: dict[str, Any], keep_previous: bool = True) -> None:
    """Write ``payload`` (plus format and package versions) to ``path``: temporary file, flush, fsync, rename.

    With ``keep_previous`` the checkpoint it replaces stays beside it as ``checkpoint.prev.pt`` (same folder,
    ``<stem>.prev<suffix>`` for other names), the fallback of :func:`load_latest_checkpoint`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format_version": FORMAT_VERSION, "rlcore_version": rlcore.__version__, **payload}
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        torch.save(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())
    if keep_previous and path.exists():
        os.replace(path, previous_path(path))
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def previous_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(PREVIOUS) if path.name == CHECKPOINT else path.with_name(f"{path.stem}.prev{path.suffix}")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read one checkpoint; any problem is a :class:`CheckpointError` whose message is one line (file, reason)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}.")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for damaged files
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(error).__name__}: {reason}); the file "
                              f"is damaged or incomplete.") from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"checkpoint {path} does not hold a checkpoint (a {type(payload).__name__}).")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {version}; this rlcore reads version "
                              f"{FORMAT_VERSION}.")
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {path} is missing {', '.join(missing)}.")
    return payload


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a checkpoint (the newest or the previous one) to resume from."""
    return any((Path(run_dir) / name).is_file() for name in (CHECKPOINT, PREVIOUS))


def load_latest_checkpoint(run_dir: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The newest checkpoint of ``run_dir`` that loads: ``checkpoint.pt``, else (with a one-line warning naming
    the file and the reason) ``checkpoint.prev.pt``; a :class:`CheckpointError` if neither loads."""
    run_dir = Path(run_dir)
    newest, previous = run_dir / CHECKPOINT, run_dir / PREVIOUS
    try:
        return load_checkpoint(newest, map_location)
    except CheckpointError as error:
        if not previous.is_file():
            raise
        first = str(error)
    try:
        payload = load_checkpoint(previous, map_location)
    except CheckpointError as error:
        raise CheckpointError(f"no usable checkpoint in {run_dir}: {first} And {error}") from None
    warnings.warn(f"{first} Using the previous checkpoint {previous} (step {payload['step']}) instead.",
                  RuntimeWarning, stacklevel=2)
    return payload


__all__ = ["CHECKPOINT", "FORMAT_VERSION", "PREVIOUS", "CheckpointError", "global_rng_state", "has_checkpoint",
           "load_checkpoint", "load_latest_checkpoint", "previous_path", "save_checkpoint", "seed_everything",
           "set_global_rng_state"]
