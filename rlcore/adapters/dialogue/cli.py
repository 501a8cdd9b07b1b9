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

from rlcore.adapters.common import AdapterAlgorithm, adapter_train_main, evaluate_saved_agent, load_run
from rlcore.adapters.dialogue import ppo, q
from rlcore.adapters.dialogue.env import DialogueEnv

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
    algorithm, config, checkpoint = load_run(run_dir, "dialogue", ALGORITHMS, device)
    module = ppo if algorithm.method == "ppo" else q
    agent = module.make_agent(config, DialogueEnv(1, device=device, **asdict(config.dialogue)))
    agent.load_state_dict(checkpoint["agent"])
    return agent, config, checkpoint


def evaluate_run(run_dir: str | Path, episodes: int | None = None, seed: int | None = None,
                 device: str = "cpu") -> dict[str, Any]:
    """Evaluate a dialogue run's saved manager like the run's own evaluations (same seed and number of users by
    default, so the last evaluation is reproduced). Returns what :func:`rlcore.cli.evaluate_run` does."""
    agent, config, checkpoint = load_agent(run_dir, device)
    return evaluate_saved_agent(agent, config, checkpoint, lambda n, seed: DialogueEnv(
        n, seed=seed, device=device, **asdict(config.dialogue)), episodes, seed)


__all__ = ["ALGORITHMS", "RUN_ALGOS", "evaluate_run", "load_agent", "train_main"]
