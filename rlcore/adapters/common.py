"""What the adapters' command lines share: the table of an adapter's algorithms and ``rlcore train <adapter>``.

Each adapter (:mod:`~rlcore.adapters.slate`, :mod:`~rlcore.adapters.dialogue`) lists its methods as
:class:`AdapterAlgorithm` rows and hands its arguments to :func:`adapter_train_main`, which picks the method
(or the one a resumed run was trained with), reads the config with tyro and runs it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tyro

from rlcore.loops.run_dir import config_from_dict, load_config


@dataclass(frozen=True)
class AdapterAlgorithm:
    """One method of an adapter: its CLI name, its run-directory name, its config class and its train function."""

    method: str
    algo: str
    config_cls: type
    train: Any


def resume_dir(argv: list[str]) -> str | None:
    """The value of ``--resume`` in ``argv``, if any."""
    for index, arg in enumerate(argv):
        if arg == "--resume" and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--resume="):
            return arg.split("=", 1)[1]
    return None


def adapter_train_main(adapter: str, algorithms: dict[str, AdapterAlgorithm], default: str, argv: list[str],
                       report: Callable[[dict[str, Any]], str]) -> int:
    """``rlcore train <adapter> [method] [--field value ...]``; returns the exit status.

    ``report(final_evaluation)`` is the line printed after the run.
    """
    run_algos = {a.algo: a for a in algorithms.values()}
    method = None
    if argv and not argv[0].startswith("-"):
        method, argv = argv[0], argv[1:]
        if method not in algorithms:
            print(f"rlcore train {adapter}: unknown method {method!r}; available: {', '.join(algorithms)} "
                  f"(e.g. `rlcore train {adapter} {default} --total-steps 20000`).", file=sys.stderr)
            return 2
    resume = resume_dir(argv)
    if resume is not None:
        saved_algo, saved = load_config(resume)
        if saved_algo not in run_algos:
            print(f"rlcore train {adapter}: {resume} is a {saved_algo} run, not a {adapter} run; use "
                  f"`rlcore train {saved_algo} --resume ...`.", file=sys.stderr)
            return 2
        algorithm = run_algos[saved_algo]
        if method is not None and method != algorithm.method:
            print(f"rlcore train {adapter}: {resume} is a {algorithm.method} run; use `rlcore train {adapter} "
                  f"{algorithm.method} --resume ...`.", file=sys.stderr)
            return 2
        config_default = config_from_dict(algorithm.config_cls, saved)
    else:
        algorithm = algorithms[method or default]
        config_default = algorithm.config_cls()
    config = tyro.cli(algorithm.config_cls, args=argv, default=config_default,
                      prog=f"rlcore train {adapter} {algorithm.method}",
                      description=(algorithm.config_cls.__doc__ or "").strip())
    result = algorithm.train(config)
    final = result.evaluations[-1] if result.evaluations else None
    if final is not None:
        print(report(final))
    print(f"run directory: {result.run_dir}  (tensorboard --logdir {result.run_dir.parent})")
    return 0


__all__ = ["AdapterAlgorithm", "adapter_train_main", "resume_dir"]
