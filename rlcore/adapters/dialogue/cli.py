"""``rlcore train dialogue`` and ``rlcore eval`` of dialogue runs, over the same run session as every rlcore run.

    rlcore train dialogue [ppo|q] [--field value ...]    train (ppo by default; --help lists every field)
    rlcore train dialogue --resume RUN_DIR               continue a dialogue run from its last checkpoint
    rlcore eval RUN_DIR [--episodes N]                   evaluate a dialogue run's saved manager

A run's ``config.json`` records its algorithm (``dialogue-ppo`` or ``dialogue-q``) and its whole config, the
dialogue task included, so that resuming rebuilds the same environments and continues bit for bit.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from rlcore.adapters.common import AdapterAlgorithm, adapter_train_main
from rlcore.adapters.dialogue import ppo, q
from rlcore.adapters.dialogue.env import DialogueEnv
from rlcore.loops.checkpoint import load_latest_checkpoint
from rlcore.loops.evaluation import evaluate_episodes, summarize
from rlcore.loops.run_dir import config_from_dict, load_config

ALGORITHMS = {
    "ppo": AdapterAlgorithm("ppo", "dialogue-ppo", ppo.DialoguePPOConfig, ppo.train),
    "q": AdapterAlgorithm("q", "dialogue-q", q.DialogueQConfig, q.train),
}
RUN_ALGOS = {a.algo: a for a in ALGORITHMS.values()}
"""Run-directory algorithm names of dialogue runs (what ``config.json`` says)."""


def _report(final: dict[str, Any]) -> str:
    turns = final.get("metrics", {}).get("episode_length", float("nan"))
    return (f"final evaluation at step {final['step']}: return {final['return_mean']:.2f} ± {final['return_std']:.2f} "
            f"over {len(final['returns'])} users, {turns:.1f} turns per user")


def train_main(argv: list[str]) -> int:
    """``rlcore train dialogue ...``; returns the exit status."""
    return adapter_train_main("dialogue", ALGORITHMS, "ppo", argv, _report)


def load_agent(run_dir: str | Path, device: str = "cpu") -> tuple[Any, Any, dict[str, Any]]:
    """``(manager, config, checkpoint)`` of a dialogue run's newest checkpoint that loads."""
    name, saved = load_config(run_dir)
    if name not in RUN_ALGOS:
        raise ValueError(f"{run_dir} is a {name} run, not a dialogue run ({', '.join(RUN_ALGOS)}).")
    config = config_from_dict(RUN_ALGOS[name].config_cls, {**saved, "device": device})
    checkpoint = load_latest_checkpoint(run_dir, map_location=device)
    env = DialogueEnv(1, device=device, **asdict(config.dialogue))
    module = ppo if name == "dialogue-ppo" else q
    agent = module.make_agent(config, env)
    agent.load_state_dict(checkpoint["agent"])
    return agent, config, checkpoint


def evaluate_run(run_dir: str | Path, episodes: int | None = None, seed: int | None = None,
                 device: str = "cpu") -> dict[str, Any]:
    """Evaluate a dialogue run's saved manager like the run's own evaluations (same seed and number of users by
    default, so the last evaluation is reproduced). Returns what :func:`rlcore.cli.evaluate_run` does."""
    agent, config, checkpoint = load_agent(run_dir, device)
    episodes = config.eval_episodes if episodes is None else episodes
    seed = config.seed + 1_000_003 if seed is None else seed
    env = DialogueEnv(config.eval_episodes, seed=seed, device=device, **asdict(config.dialogue))
    result = evaluate_episodes(lambda obs: agent.act(obs, checkpoint["step"], deterministic=True), env, seed=seed,
                               episodes=episodes)
    mean, std = summarize(result.returns)
    return {"return_mean": mean, "return_std": std, "returns": result.returns.tolist(),
            "metrics": {k: float(v.nanmean()) for k, v in result.metrics.items()}, "seed": seed,
            "step": checkpoint["step"]}


__all__ = ["ALGORITHMS", "RUN_ALGOS", "evaluate_run", "load_agent", "train_main"]
