"""The learner's side of the rollout actors: requests, weights by version, and recovery from a dead actor.

Each actor has at most one request outstanding. The pool remembers, per actor, the state that came with the
last batch the learner accepted ("acknowledged") and the request now outstanding. When a request fails because
the actor died (Ray restarts it by re-running its constructor, up to ``max_restarts`` times), the pool gives the
new actor the acknowledged state and the weights of the version it acted with, and sends the same request
again: the batch that comes back is the one that was lost, bit for bit.

The pool's :meth:`RolloutPool.state_dict` (acknowledged states, outstanding requests, the weights they refer to)
goes into the learner's checkpoint, so a resumed run restores its actors too.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from rlcore.distributed.actor import RolloutActor, StaleActorError
from rlcore.distributed.config import check_resumable

NAMESPACE = "rlcore"
"""Ray namespace of the rollout actors (``ray.util.list_named_actors(all_namespaces=True)`` lists them)."""


def ensure_ray(address: str | None = None) -> None:
    """Connect to the Ray cluster at ``address``, or start Ray on this machine (None), unless connected."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, namespace=NAMESPACE, include_dashboard=False, log_to_driver=False,
                 ignore_reinit_error=True)


def _failure_types() -> tuple[type[BaseException], ...]:
    from ray import exceptions

    return tuple(getattr(exceptions, name) for name in ("RayActorError", "ActorUnavailableError")
                 if hasattr(exceptions, name))


class RolloutPool:
    """``workers`` :class:`~rlcore.distributed.actor.RolloutActor` s on Ray, fed by one learner.

    ``make_agent``, ``config``, ``env_factory`` and ``on_policy`` are as for :class:`RolloutActor`;
    ``config.distributed`` says how many actors, their CPUs and their restarts.

    Args:
        name: prefix of the actors' Ray names (``{name}-{i}``, namespace :data:`NAMESPACE`).
        retry_seconds: how long to keep trying to reach a restarting actor before giving up.
    """

    def __init__(self, make_agent: Any, config: Any, env_factory: Any = None, on_policy: bool = False,
                 name: str | None = None, retry_seconds: float = 120.0) -> None:
        import ray

        settings = config.distributed
        ensure_ray(settings.ray_address)
        self.name = name or f"rlcore-rollout-{uuid.uuid4().hex[:8]}"
        self.retry_seconds = retry_seconds
        remote = ray.remote(RolloutActor).options
        self.actors = [remote(name=f"{self.name}-{i}", namespace=NAMESPACE, num_cpus=settings.cpus_per_worker,
                              max_restarts=settings.max_restarts, max_task_retries=0, lifetime=None)
                       .remote(make_agent, config, i, env_factory, on_policy) for i in range(settings.workers)]
        n = len(self.actors)
        self.acknowledged: list[dict[str, Any] | None] = [None] * n
        self.outstanding: list[dict[str, Any] | None] = [None] * n
        self._refs: list[Any] = [None] * n
        self.weights: dict[int, dict[str, Any]] = {}
        self.version = -1
        self.restarts = 0
        """Requests that failed because an actor died, and were recovered."""
        self.transitions_received = [0] * n

    @property
    def workers(self) -> int:
        return len(self.actors)

    # ------------------------------------------------------------------ weights and requests
    def push(self, weights: dict[str, Any]) -> int:
        """Make ``weights`` (see :func:`~rlcore.distributed.actor.policy_weights`) the next version; actors load
        it with their next request. Returns the version."""
        import ray

        self.version += 1
        self.weights[self.version] = ray.put(weights)
        self._forget_unused_weights()
        return self.version

    def request(self, index: int, step: int, steps: int) -> None:
        """Ask actor ``index`` for its next batch of ``steps`` steps per environment, from run step ``step``."""
        if self.outstanding[index] is not None:
            raise RuntimeError(f"rollout actor {index} already has a request outstanding.")
        acked = self.acknowledged[index]
        seq = 0 if acked is None else acked["seq"] + 1
        self.outstanding[index] = {"seq": seq, "step": int(step), "steps": int(steps), "version": self.version}
        self._send(index)

    def _send(self, index: int) -> None:
        request = self.outstanding[index]
        acked = self.acknowledged[index]
        acting_version = -1 if acked is None else acked["version"]
        # Only the new weights travel, and as a top-level argument, which Ray resolves from its object store.
        weights = self.weights[request["version"]] if request["version"] != acting_version else None
        self._refs[index] = self.actors[index].collect.remote(request, weights)

    def receive(self, index: int) -> dict[str, Any]:
        """The batch of actor ``index``'s outstanding request (recovering the actor if it died), acknowledged."""
        import ray

        failures = _failure_types()
        deadline = time.monotonic() + self.retry_seconds
        while True:
            try:
                batch = ray.get(self._refs[index])
                break
            except failures as error:
                self._recover(index, error, deadline)
            except ray.exceptions.RayTaskError as error:
                if not isinstance(getattr(error, "cause", None), StaleActorError):
                    raise
                self._recover(index, error, deadline)
        if batch["seq"] != self.outstanding[index]["seq"]:  # never accept a batch twice, nor skip one
            raise RuntimeError(f"rollout actor {index} sent batch {batch['seq']} for request "
                               f"{self.outstanding[index]['seq']}.")
        self.acknowledged[index] = batch["state"]
        self.outstanding[index] = None
        self._refs[index] = None
        self.transitions_received[index] += int(batch["data"]["reward"].numel())
        self._forget_unused_weights()
        return batch

    def _recover(self, index: int, error: BaseException, deadline: float) -> None:
        """Put the restarted actor ``index`` back in its acknowledged state and send its request again."""
        import ray

        self.restarts += 1
        failures = _failure_types()
        while True:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"rollout actor {index} ({self.name}-{index}) died and could not be brought back within "
                    f"{self.retry_seconds:.0f} s (Ray restarts it at most distributed.max_restarts times): "
                    f"{error}") from error
            acked = self.acknowledged[index]
            weights = None if acked is None or acked["version"] < 0 else self.weights[acked["version"]]
            try:
                ray.get(self.actors[index].restore.remote(acked, weights))
                break
            except failures:
                time.sleep(0.2)
        self._send(index)

    # ------------------------------------------------------------------ state
    def _forget_unused_weights(self) -> None:
        used = {self.version}
        used |= {s["version"] for s in self.acknowledged if s is not None}
        used |= {r["version"] for r in self.outstanding if r is not None}
        for version in [v for v in self.weights if v not in used]:
            del self.weights[version]

    def state_dict(self) -> dict[str, Any]:
        """The actors' acknowledged states, their outstanding requests and the weights those refer to."""
        import ray

        return {"acknowledged": list(self.acknowledged), "outstanding": list(self.outstanding),
                "weights": {v: ray.get(ref) for v, ref in self.weights.items()}, "version": self.version,
                "restarts": self.restarts, "transitions_received": list(self.transitions_received)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore every actor to its acknowledged state and send the requests that were outstanding again."""
        import ray

        check_resumable({"pool": state}, self.workers)
        self.weights = {int(v): ray.put(w) for v, w in state["weights"].items()}
        self.version, self.restarts = state["version"], state["restarts"]
        self.acknowledged = list(state["acknowledged"])
        self.transitions_received = list(state["transitions_received"])
        ray.get([actor.restore.remote(acked, None if acked is None else self.weights[acked["version"]])
                 for actor, acked in zip(self.actors, self.acknowledged, strict=True)])
        self.outstanding = [None] * self.workers
        for index, request in enumerate(state["outstanding"]):
            if request is not None:
                self.outstanding[index] = dict(request)
                self._send(index)

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []

