"""Scale out on Ray: rollout actors that survive failure without losing or duplicating data.

``train(config)`` with ``config.distributed.workers = N`` (``rlcore train ... --workers N``) collects on N Ray
actors instead of in this process; the rest of the config, the run directory, evaluation and checkpoints are as
for a local run. ``--ray-address`` joins an existing cluster. The max-Q solvers' ``executor="ray"`` spreads a
batch of exact solves over the cluster's CPUs (:mod:`solvers.parallel`).

* :mod:`~rlcore.distributed.config`: :class:`DistributedConfig` (no Ray import);
* :mod:`~rlcore.distributed.actor`: :class:`RolloutActor`, which owns environments and a policy copy;
* :mod:`~rlcore.distributed.pool`: :class:`RolloutPool`, the learner's side: requests, weights by version,
  recovery of a restarted actor from its last acknowledged batch;
* :mod:`~rlcore.distributed.loops`: the learner's off-policy and on-policy loops.

Ray is an optional extra: ``pip install 'rlcore[distributed]'``.
"""

from rlcore.distributed.actor import WORKER_SEED_STRIDE, RolloutActor, StaleActorError, policy_weights
from rlcore.distributed.config import DistributedConfig, check_resumable
from rlcore.distributed.pool import NAMESPACE, RolloutPool, ensure_ray

__all__ = ["NAMESPACE", "WORKER_SEED_STRIDE", "DistributedConfig", "RolloutActor", "RolloutPool",
           "StaleActorError", "check_resumable", "ensure_ray", "policy_weights"]
