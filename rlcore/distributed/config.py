"""The settings of a distributed run (``--workers N``); importing this module does not import Ray."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class DistributedConfig:
    """Rollout actors on Ray. ``workers=0`` (the default) trains in this process, as always; ``workers=N`` runs
    N Ray actors, each with its own ``num_envs`` environments and a copy of the acting policy, feeding this
    process's learner. On the command line: ``--workers``, ``--ray-address``, ``--batch-steps``, ...."""

    workers: int = 0
    """Rollout actors on Ray (0: collect in this process, no Ray)."""
    ray_address: str | None = None
    """Ray cluster to join ('auto', 'ray://head:10001', ...); None starts Ray on this machine."""
    batch_steps: int = 16
    """Environment steps (per environment) an actor collects per batch it sends (off-policy; on-policy actors
    send whole rollouts of num_steps)."""
    sync_interval: int = 1
    """Off-policy: send the learner's weights to the actors once it has made this many updates since it last sent
    them (checked at every batch it receives; 1: whenever it has learned anything)."""
    pipeline: bool = True
    """Off-policy: ask an actor for its next batch before learning from the one it sent, so that collection and
    learning overlap (the actor then acts with weights one batch older). Off: strictly alternate."""
    max_restarts: int = 10
    """Restarts Ray may make of each actor after it dies (-1: no limit); each resumes from its last batch."""
    cpus_per_worker: float = 1.0
    """CPUs Ray reserves for each rollout actor."""
    actor_device: str = "cpu"
    """Torch device of the actors' environments and policy copies."""

    def validate(self) -> None:
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0 (0: no Ray), got {self.workers}.")
        for name in ("batch_steps", "sync_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.max_restarts < -1:
            raise ValueError(f"max_restarts must be >= -1 (-1: no limit), got {self.max_restarts}.")
        if not self.cpus_per_worker >= 0:
            raise ValueError(f"cpus_per_worker must be >= 0, got {self.cpus_per_worker}.")
        if self.workers > 0:
            try:
                import ray  # noqa: F401
            except ImportError as error:
                raise ValueError(f"workers={self.workers} needs Ray, which is not installed: install the optional "
                                 "extra with `pip install 'rlcore[distributed]'` (or use workers=0).") from error


def check_resumable(checkpoint: dict[str, Any] | None, workers: int) -> None:
    """Refuse, before anything starts or is written, to resume a run with a different number of rollout actors
    (a checkpoint holds each actor's state, or, for a local run, the one loop's)."""
    if checkpoint is None:
        return
    saved = len(checkpoint["pool"]["acknowledged"]) if "pool" in checkpoint else 0
    if saved != workers:
        what = f"{saved} rollout actors" if saved else "no rollout actors (it collected in its own process)"
        raise ValueError(f"the checkpoint was written by a run with {what}; resume it with --workers {saved}, not "
                         f"{workers}.")
