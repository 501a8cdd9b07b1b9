"""Map a picklable function over independent jobs: in this process, a process pool, or Ray.

MIP solvers are sequential, so a batch of states is solved by one worker per core, each building its
own models. Workers receive numpy-only jobs (:class:`~solvers.mip_model.MIPProblem`) and never touch
torch, so the pool is cheap to feed. Pools are created once per (workers, start method) and reused.
``executor="ray"`` runs the same function as Ray tasks (``pip install 'rlcore[distributed]'``); Ray is
initialised locally if no cluster is connected.

No pool is started where none is needed (one job, one worker, ``executor="serial"``). Workers started
with ``"forkserver"`` or ``"spawn"`` re-import the main script, so a script that calls a solver at its
top level, outside ``if __name__ == "__main__":``, would run that call again in every worker (Python
then fails with "An attempt has been made to start a new process before the current process has
finished its bootstrapping phase"). :func:`plan` sees this before starting a pool, from the line of
the main script that led to the call: it then starts the workers with ``"fork"`` (no re-import) when
that is safe (Linux, this process has a single thread; the pool is then kept and reused), or else
solves in this process, with one warning that names the guard.
"""

from __future__ import annotations

import ast
import atexit
import functools
import multiprocessing
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXECUTORS = ("process", "serial", "ray")
_POOLS: dict[tuple[int, str], ProcessPoolExecutor] = {}
_WARNED: set[str] = set()


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
                             "with `pip install 'rlcore[distributed]'` (or `pip install 'ray>=2.9'`).") from error


@dataclass(frozen=True)
class Plan:
    """How :func:`run` will execute a list of jobs."""

    executor: str
    """``"serial"`` (this process), ``"process"`` (a local pool) or ``"ray"``."""
    concurrency: int
    """Jobs that run at the same time (1 for ``"serial"``), for callers that share a time budget."""
    pool_size: int = 1
    start_method: str = "forkserver"


def plan(n_jobs: int, workers: int | None = None, executor: str = "process",
         start_method: str = "forkserver") -> Plan:
    """Choose how to run ``n_jobs`` jobs (see the module docstring); warns once if it must fall back."""
    check_executor(executor)
    if executor == "ray" and workers is None:
        workers = ray_cpus()  # one job per CPU of the cluster
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1 (or None for one per core), got {workers}.")
    if executor == "ray":
        return Plan("ray", max(1, min(workers, n_jobs)), workers, start_method)
    if executor == "serial" or workers == 1 or n_jobs <= 1:
        return Plan("serial", 1)
    if start_method != "fork" and (script := _main_reruns_this_call()) is not None:
        if (workers, "fork") in _POOLS or _fork_is_safe():  # a pool forked earlier, while it was safe, is reused
            return Plan("process", min(workers, n_jobs), workers, "fork")
        _warn_once("guard", f"solvers: {script} calls a max-Q solver outside an `if __name__ == \"__main__\":` "
                            f"guard, so worker processes (start method {start_method!r}) would run that call "
                            "again; solving in this process instead. Put the script's top-level work under "
                            "`if __name__ == \"__main__\":` to solve on a pool of worker processes.")
        return Plan("serial", 1)
    return Plan("process", min(workers, n_jobs), workers, start_method)


RAY_TASK_RETRIES = 2
"""Times Ray runs a job again whose worker died (a crashed process, a lost node) before giving up on it."""


def run(schedule: Plan, function: Callable[[Any], Any], jobs: Sequence[Any], timeout: float | None = None,
        on_timeout: Callable[[Any], Any] | None = None,
        on_failure: Callable[[Any], Any] | None = None) -> list[Any]:
    """``[function(job) for job in jobs]``, in order, as ``schedule`` says.

    With ``timeout`` (seconds, for pools and Ray), jobs not finished by then are abandoned (cancelled
    if not started) and replaced by ``on_timeout(job)``; ``function`` is expected to stop on its own
    by then, so this only guards against pool start-up and queueing delays. Serial jobs always run.
    On Ray, a job whose worker dies is retried :data:`RAY_TASK_RETRIES` times, then replaced by
    ``on_failure(job)`` (without ``on_failure`` the error is raised). An exception raised by ``function``
    itself is never retried or replaced: it is raised.
    """
    if schedule.executor == "serial":
        return [function(job) for job in jobs]
    if schedule.executor == "ray":
        return _run_ray(function, jobs, schedule.pool_size, timeout, on_timeout, on_failure)
    key = (schedule.pool_size, schedule.start_method)
    try:
        futures = [_pool(*key).submit(function, job) for job in jobs]
        if timeout is None or on_timeout is None:
            return [future.result() for future in futures]
        done, _ = wait(futures, timeout=max(timeout, 0.0))
        results = []
        for future, job in zip(futures, jobs, strict=True):
            if future in done:
                results.append(future.result())
            else:
                future.cancel()
                results.append(on_timeout(job))
        return results
    except BrokenProcessPool as error:
        _discard_pool(key)
        raise RuntimeError(
            "a max-Q worker process died, so the pool broke (it is discarded; the next call starts a new "
            "one). If the script runs solvers at its top level, put that work under "
            "`if __name__ == \"__main__\":`, or pass workers=1 to solve in this process.") from error


def map_jobs(function: Callable[[Any], Any], jobs: Sequence[Any], workers: int | None = None,
             executor: str = "process", start_method: str = "forkserver") -> list[Any]:
    """``[function(job) for job in jobs]``, in order, spread over ``workers`` processes or Ray tasks."""
    return run(plan(len(jobs), workers, executor, start_method), function, jobs)


# ------------------------------------------------------------------------------------------- pools
def _pool(workers: int, start_method: str) -> ProcessPoolExecutor:
    key = (workers, start_method)
    if key not in _POOLS:
        _POOLS[key] = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(start_method))
    return _POOLS[key]


def _discard_pool(key: tuple[int, str]) -> None:
    pool = _POOLS.pop(key, None)
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)


@atexit.register
def shutdown_pools() -> None:
    """Stop every worker pool this module started."""
    while _POOLS:
        _, pool = _POOLS.popitem()
        pool.shutdown(wait=False, cancel_futures=True)


def ray_cpus() -> int:
    """The CPUs of the Ray cluster this process is connected to (Ray is started here if it is not)."""
    import ray

    if not ray.is_initialized():
        ray.init(ignore_reinit_error=True, log_to_driver=False, include_dashboard=False)
    return max(int(ray.cluster_resources().get("CPU", 1)), 1)


@functools.lru_cache(maxsize=32)
def _remote(function: Callable[[Any], Any], num_cpus: float) -> Any:
    import ray

    return ray.remote(num_cpus=num_cpus, max_retries=RAY_TASK_RETRIES, retry_exceptions=False)(function)


def _run_ray(function: Callable[[Any], Any], jobs: Sequence[Any], workers: int, timeout: float | None,
             on_timeout: Callable[[Any], Any] | None, on_failure: Callable[[Any], Any] | None) -> list[Any]:
    import ray

    # Each task reserves 1/workers of the cluster's CPUs, so that at most `workers` jobs run at once.
    remote = _remote(function, ray_cpus() / workers)
    refs = [remote.remote(job) for job in jobs]
    if not refs:
        return []
    finished = set(refs)
    if timeout is not None and on_timeout is not None:
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=max(timeout, 0.0))
        finished = set(ready)
    results = []
    for ref, job in zip(refs, jobs, strict=True):
        if ref not in finished:
            ray.cancel(ref)
            results.append(on_timeout(job))
            continue
        try:
            results.append(ray.get(ref))
        except ray.exceptions.RayTaskError:
            raise  # the job's own exception, not a lost worker
        except ray.exceptions.RayError:
            if on_failure is None:
                raise
            results.append(on_failure(job))
    return results


# ----------------------------------------------------------------------------- the __main__ guard
def _main_reruns_this_call() -> str | None:
    """The main script's name if a worker that re-imports ``__main__`` would make this very call again.

    That is the case when a line of the main module's top-level code that led here lies outside every
    ``if __name__ == "__main__":`` block (or when this process is itself still importing its main).
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        return str(path or "the main module")
    spec_name = getattr(getattr(main, "__spec__", None), "name", None)
    if main is None or path is None:
        return None  # an interactive session or `python -c`: nothing is re-imported
    if spec_name is not None and (spec_name == "__main__" or spec_name.endswith(".__main__")):
        return None  # multiprocessing does not re-run a package's __main__
    if spec_name is None and Path(path).stem == "ipython":
        return None
    namespace = vars(main)
    lines, frame = [], sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals is namespace:
            lines.append(frame.f_lineno)
        frame = frame.f_back
    if not lines:
        return None  # not called from the main module's top-level code (a thread, a callback)
    try:
        guarded = _guarded_lines(str(path), os.stat(path).st_mtime_ns)
    except OSError:
        return None
    if guarded is None:
        return None
    if all(any(first <= line <= last for first, last in guarded) for line in lines):
        return None
    return str(path)


@functools.lru_cache(maxsize=16)
def _guarded_lines(path: str, mtime_ns: int) -> tuple[tuple[int, int], ...] | None:
    """Line ranges of the bodies of ``if __name__ == "__main__":`` blocks in ``path`` (None: unreadable)."""
    del mtime_ns  # part of the cache key only
    try:
        tree = ast.parse(Path(path).read_bytes())
    except (OSError, SyntaxError, ValueError):
        return None
    ranges = []
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_main_test(node.test) and node.body:
            last = max(getattr(n, "end_lineno", None) or n.lineno for n in node.body)
            ranges.append((node.body[0].lineno, last))
    return tuple(ranges)


def _is_main_test(test: ast.expr) -> bool:
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    constants = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"]
    return len(names) == 1 and len(constants) == 1


def _fork_is_safe() -> bool:
    """``fork`` is safe where it exists and this process has a single thread (no lock can be held)."""
    if not sys.platform.startswith("linux") or "fork" not in multiprocessing.get_all_start_methods():
        return False
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:  # pragma: no cover - /proc not mounted
        return False


def _warn_once(key: str, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
