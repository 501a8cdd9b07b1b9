"""The ``rlcore`` command line.

    rlcore train [ALGO] [--field value ...]   train (ALGO defaults to caql; --help lists every field)
    rlcore train ALGO --resume RUN_DIR        continue a run from its last checkpoint
    rlcore train slate [slateq|ppo] [...]     train a slate agent (rlcore.adapters.slate; --resume as above)
    rlcore train dialogue [ppo|q] [...]       train a dialogue manager (rlcore.adapters.dialogue; --resume too)
    rlcore train diffusion [...]              fine-tune a test bed's diffusion model (rlcore.adapters.diffusion)
    rlcore train retrieval [...]              R4T fan-out retrieval on a catalogue (rlcore.adapters.retrieval)
    rlcore eval RUN_DIR [--episodes N]        evaluate the saved agent of a run (its evaluation seeds and size)
    rlcore solvers                            list the registered max-Q solvers
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import torch
import tyro

from rlcore import algos
from rlcore.loops.evaluation import evaluate_episodes, summarize
from rlcore.loops.run_dir import RunDirInUse, config_from_dict, load_config, load_run_record
from rlcore.loops.session import EnvSource, is_env, make_env

USAGE = __doc__ or ""
SLATE_RUN_ALGOS = ("slateq", "slate-ppo")
"""Algorithm names of slate-adapter runs (kept here so that ``rlcore eval`` need not import the adapter)."""
DIALOGUE_RUN_ALGOS = ("dialogue-ppo", "dialogue-q")
"""Algorithm names of dialogue-adapter runs."""
ADAPTER_CLIS = {name: f"rlcore.adapters.{name}.cli" for name in ("slate", "dialogue", "diffusion", "retrieval")}
"""``rlcore train NAME`` for an adapter: the module whose ``train_main`` takes the rest of the command line."""


def train_main(argv: list[str]) -> int:
    name = "caql"
    if argv and not argv[0].startswith("-"):
        name, argv = argv[0], argv[1:]
    if name in ADAPTER_CLIS:  # each adapter has its own algorithms, configs and command line
        return importlib.import_module(ADAPTER_CLIS[name]).train_main(argv)
    try:
        algorithm = algos.get(name)
    except ValueError:
        print(f"rlcore train: unknown algorithm {name!r}; available: {', '.join(sorted(algos.ALGORITHMS))}, and "
              f"the adapters' {', '.join(ADAPTER_CLIS)} (`rlcore --help` says what each trains).", file=sys.stderr)
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
    parser.add_argument("--episodes", type=int, default=None,
                        help="episodes (deterministic policy); default: the run's own eval_episodes (users, "
                             "for a slate or dialogue run), so that its last evaluation is reproduced")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the first evaluation episode (default: the run's own evaluation seed, so "
                             "the run's last evaluation is reproduced)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.episodes is not None and args.episodes < 1:
        parser.error(f"--episodes must be >= 1, got {args.episodes}")
    result = evaluate_run(args.run_dir, args.episodes, args.seed, args.device)
    args.episodes = len(result["returns"])
    print(f"{args.run_dir}: return {result['return_mean']:.1f} ± {result['return_std']:.1f} (population std) over "
          f"{args.episodes} episodes (min {min(result['returns']):.1f}, max {max(result['returns']):.1f}); "
          f"episode seeds {result['seed']}..{result['seed'] + args.episodes - 1}, checkpoint step {result['step']}")
    for name, value in result["metrics"].items():
        print(f"  {name}: {value:.4g}")
    return 0


def evaluate_run(run_dir: str | Path, episodes: int | None = None, seed: int | None = None, device: str = "cpu",
                 env: EnvSource | None = None) -> dict:
    """Evaluate a run's saved agent (its newest checkpoint that loads) over ``episodes`` episodes (default: the
    run's own ``eval_episodes``, users for a slate or dialogue run, so that its last evaluation is reproduced).

    ``seed`` defaults to the run's evaluation seed (``config.seed + 1_000_003``, what training evaluated on).
    A run trained on an environment object needs ``env``: an environment or a factory ``seed -> BatchedEnv``.
    Returns ``{"return_mean", "return_std" (population), "returns", "metrics", "seed", "step"}``.
    """
    name, _ = load_config(run_dir)
    if name in SLATE_RUN_ALGOS:  # slate runs rebuild their world from their own config
        from rlcore.adapters.slate.cli import evaluate_run as slate_evaluate_run

        if env is not None:
            raise ValueError(f"{run_dir} is a slate run; its environment is rebuilt from its config, so leave env "
                             "unset.")
        return slate_evaluate_run(run_dir, episodes, seed, device)
    if name in DIALOGUE_RUN_ALGOS:  # and so do dialogue runs
        from rlcore.adapters.dialogue.cli import evaluate_run as dialogue_evaluate_run

        if env is not None:
            raise ValueError(f"{run_dir} is a dialogue run; its environment is rebuilt from its config, so leave env "
                             "unset.")
        return dialogue_evaluate_run(run_dir, episodes, seed, device)
    if name == "retrieval-r4t":
        raise ValueError(f"{run_dir} is a retrieval run; every retriever's evaluation is in "
                         f"{Path(run_dir) / 'summary.json'}.")
    if name == "diffusion":  # no episodes to replay: a fine-tuning run scores samples, at the end of training
        raise ValueError(f"{run_dir} is a diffusion fine-tuning run; its final reward, held-out reward and KL are in "
                         f"{Path(run_dir) / 'summary.json'} (continue it with `rlcore train diffusion --resume "
                         f"{run_dir} --steps N`).")
    _, config = algos.run_config(run_dir, device)
    episodes = config.eval_episodes if episodes is None else episodes
    seed = config.seed + 1_000_003 if seed is None else seed
    if env is None:
        record = load_run_record(run_dir)
        if not record.get("env_from_config", True):
            raise ValueError(f"{run_dir} was trained on an environment object ({record.get('env_description')}); "
                             "pass it to rlcore.cli.evaluate_run(run_dir, env=...) (an environment or a factory "
                             "seed -> BatchedEnv).")
        eval_env = make_env(config, episodes)
    else:
        eval_env = env if is_env(env) else env(seed)
    trained = algos.load_agent(run_dir, eval_env, device)
    agent, step = trained.agent, trained.step
    result = evaluate_episodes(lambda obs: agent.act(obs, step, deterministic=True), eval_env,
                               seed=seed, episodes=episodes)
    eval_env.close()
    mean, std = summarize(result.returns)
    return {"return_mean": mean, "return_std": std, "returns": result.returns.tolist(),
            "metrics": {k: float(v.nanmean()) for k, v in result.metrics.items()}, "seed": seed,
            "step": step}


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
        except (ValueError, FileNotFoundError, RunDirInUse) as error:
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
