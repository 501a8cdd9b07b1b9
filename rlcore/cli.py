"""The ``rlcore`` command line.

    rlcore train [ALGO] [--field value ...]   train (ALGO defaults to caql; --help lists every field)
    rlcore train ALGO --resume RUN_DIR        continue a run from its last checkpoint
    rlcore eval RUN_DIR [--episodes 10]       evaluate the saved agent of a run
    rlcore solvers                            list the registered max-Q solvers
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import tyro

from rlcore import algos
from rlcore.checkpoint import load_checkpoint
from rlcore.evaluation import evaluate
from rlcore.runs import config_from_dict, load_config
from rlcore.training import make_env

USAGE = __doc__ or ""


def train_main(argv: list[str]) -> int:
    name = "caql"
    if argv and not argv[0].startswith("-"):
        name, argv = argv[0], argv[1:]
    try:
        algorithm = algos.get(name)
    except ValueError as error:
        print(f"rlcore train: {error}", file=sys.stderr)
        return 2
    default = algorithm.config_cls()
    resume = _resume_dir(argv)
    if resume is not None:
        saved_algo, saved = load_config(resume)
        if saved_algo != name:
            print(f"rlcore train: {resume} is a {saved_algo} run; use `rlcore train {saved_algo} --resume ...`.",
                  file=sys.stderr)
            return 2
        default = config_from_dict(algorithm.config_cls, saved)
    config = tyro.cli(algorithm.config_cls, args=argv, default=default, prog=f"rlcore train {name}",
                      description=(algorithm.config_cls.__doc__ or "").strip())
    result = algorithm.train(config)
    final = result.evaluations[-1] if result.evaluations else None
    if final is not None:
        print(f"final evaluation at step {final['step']}: return {final['return_mean']:.1f} "
              f"± {final['return_std']:.1f} over {len(final['returns'])} episodes")
    print(f"run directory: {result.run_dir}  (tensorboard --logdir {result.run_dir.parent})")
    return 0


def _resume_dir(argv: list[str]) -> str | None:
    for index, arg in enumerate(argv):
        if arg == "--resume" and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--resume="):
            return arg.split("=", 1)[1]
    return None


def eval_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rlcore eval", description="Evaluate the saved agent of a run directory.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--episodes", type=int, default=10, help="episodes (deterministic policy)")
    parser.add_argument("--seed", type=int, default=12345, help="seed of the evaluation environments")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error(f"--episodes must be >= 1, got {args.episodes}")
    mean, std, returns = evaluate_run(args.run_dir, args.episodes, args.seed, args.device)
    print(f"{args.run_dir}: return {mean:.1f} ± {std:.1f} over {args.episodes} episodes "
          f"(min {min(returns):.1f}, max {max(returns):.1f})")
    return 0


def evaluate_run(run_dir: str | Path, episodes: int = 10, seed: int = 12345,
                 device: str = "cpu") -> tuple[float, float, list[float]]:
    """Mean, standard deviation and list of returns of a run's saved agent over ``episodes`` episodes."""
    name, saved = load_config(run_dir)
    algorithm = algos.get(name)
    config = config_from_dict(algorithm.config_cls, {**saved, "device": device})
    checkpoint = load_checkpoint(Path(run_dir) / "checkpoint.pt", map_location=device)
    env = make_env(config, episodes)
    agent = algorithm.make_agent(config, env)
    agent.load_state_dict(checkpoint["agent"])
    returns = evaluate(lambda obs: agent.act(obs, checkpoint["step"], deterministic=True), env, seed=seed)
    env.close()
    std = float(returns.std()) if episodes > 1 else 0.0
    return float(returns.mean()), std, returns.tolist()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    torch.set_num_threads(1)
    commands = {"train": train_main, "eval": eval_main}
    if command in commands:
        try:
            return commands[command](rest)
        except (ValueError, FileNotFoundError) as error:
            print(f"rlcore {command}: error: {error}", file=sys.stderr)
            return 2
    if command == "solvers":
        import solvers

        print("\n".join(solvers.available()))
        return 0
    print(f"rlcore: unknown command {command!r}\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
