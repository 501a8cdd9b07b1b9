"""What the adapters' command lines share: the table of an adapter's algorithms, ``rlcore train <adapter>`` and
``rlcore eval`` of an adapter's run.

Each adapter (:mod:`~rlcore.adapters.slate`, :mod:`~rlcore.adapters.dialogue`) lists its methods as
:class:`AdapterAlgorithm` rows and hands its arguments to :func:`adapter_train_main`, which picks the method
(or the one a resumed run was trained with), reads the config with tyro and runs it; :func:`load_run` and
:func:`evaluate_saved_agent` read a run back and evaluate its agent as the run did.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tyro

from rlcore.loops.checkpoint import has_checkpoint, load_latest_checkpoint
from rlcore.loops.evaluation import evaluate_episodes, summarize
from rlcore.loops.run_dir import (
    check_new_run_dir,
    check_resume_config,
    config_from_dict,
    load_config,
    new_run_dir_path,
    save_config,
)


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


def read_run_config(command: str, algo: str, config_cls: type, argv: list[str], description: str) -> Any | None:
    """The config of ``rlcore train <command> ...`` for a run directory of ``algo``: read by tyro from ``argv``
    over the defaults, or over a resumed run's saved config (``--resume RUN_DIR``). None, after a one-line error
    on stderr, when ``--resume`` names no run or a run of another algorithm."""
    resume = resume_dir(argv)
    default = config_cls()
    if resume is not None:
        try:
            saved_algo, saved = load_config(resume)
        except FileNotFoundError as error:
            print(f"rlcore train {command}: {error}", file=sys.stderr)
            return None
        if saved_algo != algo:
            print(f"rlcore train {command}: {resume} is a {saved_algo} run; use `rlcore train {saved_algo} "
                  "--resume ...`.", file=sys.stderr)
            return None
        default = config_from_dict(config_cls, saved)
    return tyro.cli(config_cls, args=argv, default=default, prog=f"rlcore train {command}", description=description)


def open_run_dir(config: Any, algo: str, label: str, may_change: Iterable[str]) -> tuple[Path, bool]:
    """The run directory of an adapter's ``rlcore train`` run config (fields ``resume``, ``run_dir``, ``log_root``,
    ``seed``) and whether this call created it. A resumed run is checked against its saved config first (only the
    fields in ``may_change`` may differ; nothing is written); a new one is refused if the directory holds a run,
    then created with its ``config.json``. Pair it with :func:`removed_on_bad_input`."""
    if config.resume is not None:
        run_dir = Path(config.resume)
        _, saved = load_config(run_dir)
        check_resume_config(run_dir, saved, dataclasses.replace(config, resume=None), may_change)
        return run_dir, False
    run_dir = Path(config.run_dir) if config.run_dir else new_run_dir_path(config.log_root, algo, label, config.seed)
    check_new_run_dir(run_dir)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(run_dir, algo, dataclasses.replace(config, resume=None))
    return run_dir, created


@contextlib.contextmanager
def removed_on_bad_input(run_dir: Path, created: bool) -> Iterator[None]:
    """Remove ``run_dir`` again when the block, the start of a run in a directory that this call ``created``,
    refuses its input (a ``ValueError``) before the first checkpoint: a bad setting leaves nothing on disk."""
    try:
        yield
    except ValueError:
        if created and not has_checkpoint(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def check_settings(config_cls: type, overrides: dict[str, Any], label: str) -> None:
    """Refuse keyword settings that are not fields of ``config_cls``, listing the accepted ones."""
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown} for {label}; accepted: {sorted(known)}.")


class BoundPolicy:
    """What the adapters' untrained baselines share: the environment they were prepared for (``prepare(env,
    seed)``, which ``evaluate`` calls), of the adapter's environment class ``env_type``."""

    name = "policy"
    env_type: type = object

    def __init__(self) -> None:
        self.env: Any = None

    def prepare(self, env: Any, seed: int = 0) -> None:
        if not isinstance(env, self.env_type):
            raise ValueError(f"{self.name} acts in a {self.env_type.__name__}, got {type(env).__name__}.")
        self.env = env

    def _env(self) -> Any:
        if self.env is None:
            raise ValueError(f"{self.name} is not bound to an environment yet; call prepare(env) first (evaluate "
                             "does).")
        return self.env

    def __call__(self, obs: dict[str, Any]) -> Any:
        return self.act(obs, deterministic=True)

    def act(self, obs: dict[str, Any], step: int = 0, deterministic: bool = False) -> Any:
        raise NotImplementedError


def load_run(run_dir: str | Path, adapter: str, algorithms: dict[str, AdapterAlgorithm],
             device: str = "cpu") -> tuple[AdapterAlgorithm, Any, dict[str, Any]]:
    """``(algorithm, config, checkpoint)`` of an adapter's run: its method's row, its config (on ``device``) and
    its newest checkpoint that loads. A run of another algorithm is a ``ValueError`` that names it."""
    run_algos = {a.algo: a for a in algorithms.values()}
    name, saved = load_config(run_dir)
    if name not in run_algos:
        raise ValueError(f"{run_dir} is a {name} run, not a {adapter} run ({', '.join(run_algos)}).")
    config = config_from_dict(run_algos[name].config_cls, {**saved, "device": device})
    return run_algos[name], config, load_latest_checkpoint(run_dir, map_location=device)


def evaluate_saved_agent(agent: Any, config: Any, checkpoint: dict[str, Any], make_env: Callable[[int, int], Any],
                         episodes: int | None = None, seed: int | None = None) -> dict[str, Any]:
    """Evaluate a run's saved agent like the run's own evaluations: by default the same seed and number of users,
    so that the run's last evaluation is reproduced. ``make_env(num_envs, seed)`` builds the run's environment.
    Returns what :func:`rlcore.cli.evaluate_run` does."""
    episodes = config.eval_episodes if episodes is None else episodes
    seed = config.seed + 1_000_003 if seed is None else seed
    env = make_env(config.eval_episodes, seed)
    result = evaluate_episodes(lambda obs: agent.act(obs, checkpoint["step"], deterministic=True), env, seed=seed,
                               episodes=episodes)
    mean, std = summarize(result.returns)
    return {"return_mean": mean, "return_std": std, "returns": result.returns.tolist(),
            "metrics": {k: float(v.nanmean()) for k, v in result.metrics.items()}, "seed": seed,
            "step": checkpoint["step"]}


__all__ = ["AdapterAlgorithm", "BoundPolicy", "adapter_train_main", "check_settings", "evaluate_saved_agent",
           "load_run", "read_run_config", "resume_dir"]
