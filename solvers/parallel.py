"""Map a picklable function over independent jobs: in this process, a process pool, or Ray.

MIP solvers are sequential, so a batch of states is solved by one worker per core, each building its
own models. Workers receive numpy-only jobs (:class:`~solvers.mip_model.MIPProblem`) and never touch
torch, so the pool is cheap to feed. Pools are created once per (workers, start method) and reused.
``executor="ray"`` runs the same function as Ray tasks (``pip install 'rlcore[ray]'``); Ray is
initialised locally if no cluster is connected.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

EXECUTORS = ("process", "serial", "ray")
_POOLS: dict[tuple[int, str], ProcessPoolExecutor] = {}


def default_workers() -> int:
    """The number of cores this process may use."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # pragma: no cover - not Linux
        return max(os.cpu_count() or 1, 1)


def check_executor(executor: str) -> None:
    """Fail early, with the fix, for an unknown executor or a missing Ray."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}.")
    if executor == "ray":
        try:
            import ray  # noqa: F401
        except ImportError as error:
            raise ValueError("executor='ray' needs Ray, which is not installed: install the optional extra "
                             "with `pip install 'rlcore[ray]'` (or `pip install 'ray>=2.9'`).") from error


def _pool(workers: int, start_method: str) -> ProcessPoolExecutor:
    key = (workers, start_method)
    if key not in _POOLS:
        _POOLS[key] = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(start_method))
    return _POOLS[key]


@atexit.register
def shutdown_pools() -> None:
    """Stop every worker pool this module started."""
    while _POOLS:
        _, pool = _POOLS.popitem()
        pool.shutdown(wait=False, cancel_futures=True)


def map_jobs(function: Callable[[Any], Any], jobs: Sequence[Any], workers: int | None = None,
             executor: str = "process", start_method: str = "forkserver") -> list[Any]:
    """``[function(job) for job in jobs]``, in order, spread over ``workers`` processes or Ray tasks."""
    check_executor(executor)
    if executor == "ray":
        import ray

        if not ray.is_initialized():
            ray.init(ignore_reinit_error=True, log_to_driver=False)
        remote = ray.remote(function)
        return ray.get([remote.remote(job) for job in jobs])
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1 (or None for one per core), got {workers}.")
    if executor == "serial" or workers == 1 or len(jobs) <= 1:
        return [function(job) for job in jobs]
    return list(_pool(workers, start_method).map(function, jobs))
