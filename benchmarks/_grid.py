"""Run a benchmark's grid of independent runs in local processes (the default) or as Ray tasks.

Every script in ``benchmarks/`` runs a grid of (task, method, seed) runs, or of side-by-side measurements, that
do not depend on each other. :func:`run_grid` calls a function on each job; :func:`run_commands` runs child
processes (scripts that start ``python benchmarks/<script>.py --run ...`` for each job). Both take
``executor="process"``, what the scripts have always done on one machine, or ``executor="ray"``, which runs each
job as a Ray task on a local Ray or on a cluster (``ray_address``). Results come back to the driver as each job
finishes, where the scripts write their per-run result files: an interrupted grid keeps what finished, and a
later invocation skips the runs whose file exists, whichever executor ran them.

On a multi-node cluster a task runs on whatever node Ray picks: the repository and the Python environment must
be at the same paths on every node (for the child processes, and for runs that resume from a checkpoint in the
repository, a shared filesystem), while the result files are written by the driver from the tasks' return
values, so they land on the driver's machine.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

EXECUTORS = ("process", "ray")
RAY_MISSING = "--executor ray needs Ray, which is not installed here: pip install 'rlcore[distributed]'"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
"""The variables that hold a job to one thread: each job is measured on one core, as on the reference machine."""

Job = TypeVar("Job")
Result = TypeVar("Result")


def check_executor(executor: str) -> str:
    """``executor`` if it can run here; the Ray executor needs Ray importable, so say how to install it."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor is one of {', '.join(EXECUTORS)}, got {executor!r}")
    if executor == "ray" and importlib.util.find_spec("ray") is None:
        raise ModuleNotFoundError(RAY_MISSING)
    return executor


def _executor_argument(value: str) -> str:
    """argparse ``type`` of ``--executor``: a missing Ray is a usage error at parse time, not a traceback later."""
    try:
        return check_executor(value)
    except ValueError:
        return value  # argparse's choices check words the error
    except ModuleNotFoundError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--executor {process,ray}`` (default ``process``) and ``--ray-address`` to a benchmark's parser."""
    parser.add_argument("--executor", type=_executor_argument, choices=EXECUTORS, default="process",
                        help="process: on this machine, as always (default); ray: as Ray tasks, see the description "
                             "(pip install 'rlcore[distributed]')")
    parser.add_argument("--ray-address", default=None, metavar="ADDRESS",
                        help="with --executor ray: the cluster to join ('auto', 'ray://host:10001'); default: start "
                             "Ray on this machine")


def one_thread() -> None:
    """Hold this process, and the processes it starts, to one thread (pool workers, through worker_start, and Ray
    tasks)."""
    os.environ.update(ONE_THREAD)
    if importlib.util.find_spec("torch") is not None:
        import torch

        torch.set_num_threads(1)


def worker_start() -> None:
    """Pool initializer: one thread (:func:`one_thread`), and an end with the script that started the pool.

    ``kill <script>`` stops the script, not its pool: an orphaned worker would train on, beside the same run started
    again (the rlcore runs lock their run directory, other work does not), so each worker exits once its parent
    is gone."""
    import threading

    one_thread()
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)  # a run's files are written atomically, so stopping it anywhere loses only its current part

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def save_result(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a tmp file, then ``replace``), unless the file already holds it.

    A run that a Ray task ran on this machine has written its file already; one from another node has not."""
    if path.exists() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def run_location(run_dir: str | Path, *, resumable: bool = True) -> dict[str, str]:
    """Where an rlcore run trains: ``{"resume": run_dir}`` when an earlier, interrupted invocation checkpointed it
    there (so the longest runs can span working sessions), else ``{"run_dir": run_dir}``, cleared of whatever a run
    that never checkpointed left. ``resumable=False`` (SB3 runs, ``--force``) always starts afresh."""
    from rlcore.loops.run_dir import holds_run

    run_dir = Path(run_dir)
    if resumable and holds_run(run_dir):
        return {"resume": str(run_dir)}
    shutil.rmtree(run_dir, ignore_errors=True)
    return {"run_dir": str(run_dir)}


def run_grid(function: Callable[[Job], Result], jobs: Sequence[Job], *, workers: int, executor: str = "process",
             ray_address: str | None = None, on_result: Callable[[Result], None] | None = None,
             cpus_per_job: float = 1.0, gpus_per_job: float = 0.0,
             fresh_process_per_job: bool = False) -> list[Result]:
    """``function(job)`` for every job; the results in the order the jobs finished.

    ``on_result(result)`` is called in this process as each job finishes, so that a script writes each run's result
    file as soon as it exists and an interrupted grid keeps what finished. ``function`` must be a module-level
    function (it is pickled to the workers); in a worker process or a Ray task it runs with one torch thread.

    * ``executor="process"``: ``workers`` processes of ``multiprocessing``'s spawn context (``imap_unordered``),
      each held to one thread; ``fresh_process_per_job`` starts a new process for every job
      (``maxtasksperchild=1``). ``workers=0`` calls ``function`` in this process, one job after another (its
      threads as they are), for jobs that start their own processes or time this machine as a whole.
    * ``executor="ray"``: a Ray task per job (``num_cpus=cpus_per_job``, ``num_gpus=gpus_per_job``,
      ``max_retries=2``, ``max_calls=1`` with ``fresh_process_per_job``), all submitted at once; Ray runs as many
      at a time as the cluster has CPUs for, so ``workers`` is ignored. A job that measures processes side by side
      asks for as many CPUs as it runs processes, so that it has a node's cores to itself (at most the largest
      node's CPUs). Joins ``ray_address`` (default: starts Ray here), and shuts down the Ray that it started.
    """
    check_executor(executor)
    if executor == "ray":
        return _run_grid_ray(function, jobs, ray_address, on_result, cpus_per_job, gpus_per_job,
                             fresh_process_per_job)
    results: list[Result] = []
    if not jobs:
        return results
    if workers == 0:
        for job in jobs:
            result = function(job)
            results.append(result)
            if on_result is not None:
                on_result(result)
        return results
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(workers, initializer=worker_start,
                                      maxtasksperchild=1 if fresh_process_per_job else None) as pool:
        for result in pool.imap_unordered(function, jobs):
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results


@dataclass(frozen=True, eq=False)
class Command:
    """One child process of a benchmark: its arguments, the file it writes its result to, and its log.

    Compared and hashed by identity, so that a script can map its commands back to its jobs."""

    argv: Sequence[str]
    result: Path | None = None
    """The file the child writes (the Ray executor returns its text from the task and writes it here)."""
    log: Path | None = None
    """Where the child's stdout and stderr go; None: this process's."""


def run_commands(commands: Sequence[Command], *, workers: int, executor: str = "process",
                 ray_address: str | None = None, env: Mapping[str, str] | None = None,
                 on_done: Callable[[Command, int], None] | None = None, cpus_per_job: float = 1.0,
                 poll_seconds: float = 2.0) -> list[tuple[Command, int]]:
    """Run every command; ``on_done(command, returncode)`` in this process as each ends (also when it fails).

    Returns (command, return code) in the order they ended. ``env``: variables added to the environment the
    commands inherit (e.g. :data:`ONE_THREAD`).

    * ``executor="process"``: at most ``workers`` child processes at once (``subprocess.Popen``), checked every
      ``poll_seconds``.
    * ``executor="ray"``: a Ray task per command (``num_cpus=cpus_per_job``; ``workers`` is ignored) that runs the
      same command with ``subprocess.run`` on whatever node it lands on, in this process's working directory.
      The task returns the exit code, the output and the text of ``command.result``; this process writes them to
      ``command.log`` (or prints them) and to ``command.result``, so results land on this machine even when the
      child ran on another node. The commands name this machine's paths (``sys.executable``, the script), so the
      repository and the environment must be at the same paths on every node.
    """
    check_executor(executor)
    done: list[tuple[Command, int]] = []

    def finish(command: Command, returncode: int) -> None:
        done.append((command, returncode))
        if on_done is not None:
            on_done(command, returncode)

    if executor == "ray" and commands:
        cwd, extra = os.getcwd(), dict(env or {})
        with _ray(ray_address) as ray:
            task = ray.remote(num_cpus=cpus_per_job, max_retries=2)(_run_command)
            pending = {task.remote(list(c.argv), extra, cwd, None if c.result is None else str(c.result)): c
                       for c in commands}
            for command, (returncode, output, text) in _as_completed(ray, pending):
                if command.log is not None:
                    command.log.write_bytes(output)
                else:
                    print(output.decode(errors="replace"), end="", flush=True)
                if text is not None and command.result is not None:
                    save_result(command.result, text)
                finish(command, returncode)
        return done

    environment = {**os.environ, **(env or {})}
    todo = list(commands)
    running: list[tuple[subprocess.Popen, Command, Any]] = []
    while todo or running:
        while todo and len(running) < workers:
            command = todo.pop(0)
            log = open(command.log, "w") if command.log is not None else None  # noqa: SIM115 (closed when it ends)
            process = subprocess.Popen(list(command.argv), env=environment, stdout=log,
                                       stderr=subprocess.STDOUT if log is not None else None)
            running.append((process, command, log))
        time.sleep(poll_seconds)
        for entry in list(running):
            process, command, log = entry
            if process.poll() is not None:
                running.remove(entry)
                if log is not None:
                    log.close()
                finish(command, process.returncode)
    return done


def _run_command(argv: list[str], env: dict[str, str], cwd: str, result: str | None) -> tuple[int, bytes, str | None]:
    """A Ray task: run one command on this node; its exit code, its output, and the text of its result file.

    A failing command is returned, not raised: the driver reports it as the process executor does, and Ray's
    retries stay for lost workers and nodes."""
    completed = subprocess.run(argv, env={**os.environ, **env}, cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, check=False)
    path = None if result is None else Path(result)
    text = path.read_text() if completed.returncode == 0 and path is not None and path.exists() else None
    return completed.returncode, completed.stdout, text


def _call_with_one_thread(function: Callable[[Job], Result], job: Job) -> Result:
    """A Ray task: ``function(job)`` with one torch thread, as in a process-executor worker."""
    one_thread()
    return function(job)


def _run_grid_ray(function: Callable[[Job], Result], jobs: Sequence[Job], address: str | None,
                  on_result: Callable[[Result], None] | None, cpus: float, gpus: float,
                  fresh: bool) -> list[Result]:
    results: list[Result] = []
    if not jobs:
        return results
    with _ray(address) as ray:
        options: dict[str, Any] = {"num_cpus": _fit_cpus(ray, cpus), "num_gpus": gpus, "max_retries": 2}
        if fresh:
            options["max_calls"] = 1
        task = ray.remote(**options)(_call_with_one_thread)
        shipped = ray.put(function)  # pickled once, not once per job
        pending = {task.remote(shipped, job): job for job in jobs}
        for _, result in _as_completed(ray, pending):
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results


def _as_completed(ray: Any, pending: dict[Any, Job]) -> Iterator[tuple[Job, Any]]:
    """(job, result) of Ray tasks as they finish; the tasks not yet finished are cancelled if the caller stops."""
    try:
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(ref)
            yield job, ray.get(ref)
    finally:
        for ref in pending:
            ray.cancel(ref)


def _fit_cpus(ray: Any, cpus: float) -> float:
    """``cpus``, or the largest node's CPUs if no node has that many: a task that asks for more never starts."""
    largest = max((node["Resources"].get("CPU", 0.0) for node in ray.nodes() if node.get("Alive")), default=cpus)
    if cpus > largest:
        warnings.warn(f"a job asks for {cpus:g} CPUs, but the largest Ray node has {largest:g}: it gets {largest:g}",
                      stacklevel=3)
        return largest
    return cpus


@contextlib.contextmanager
def _ray(address: str | None) -> Iterator[Any]:
    """Ray, connected: joins ``address`` or starts Ray here (unless already connected; then it is left running).

    This folder's helper modules (this one, ``_revisions``) are pickled by value: a Ray worker, on this node or
    another, need not find ``benchmarks/`` on its ``sys.path``."""
    check_executor("ray")
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    here = Path(__file__).resolve().parent
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and Path(path).resolve().parent == here and module.__name__ != "__main__":
            ray.cloudpickle.register_pickle_by_value(module)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def square(x: int) -> int:
    """A trivial job for the tests of this module (a module-level function, so that it pickles)."""
    return x * x
