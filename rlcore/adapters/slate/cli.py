"""``rlcore train slate`` and ``rlcore eval`` of slate runs, over the same run session as every rlcore run.

    rlcore train slate [slateq|ppo] [--field value ...]    train (slateq by default; --help lists every field)
    rlcore train slate --resume RUN_DIR                    continue a slate run from its last checkpoint
    rlcore eval RUN_DIR [--episodes N]                     evaluate a slate run's saved agent

A run's ``config.json`` records its algorithm (``slateq`` or ``slate-ppo``) and its whole config, the slate
world included, so that resuming rebuilds the same environments and continues bit for bit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlcore.adapters.common import AdapterAlgorithm, adapter_train_main, evaluate_saved_agent, load_run
from rlcore.adapters.slate import ppo, slateq
from rlcore.adapters.slate.env import SlateEnv

SlateAlgorithm = AdapterAlgorithm
"""The row of one slate method (kept under its old name)."""

ALGORITHMS = {
    "slateq": AdapterAlgorithm("slateq", "slateq", slateq.SlateQConfig, slateq.train),
    "ppo": AdapterAlgorithm("ppo", "slate-ppo", ppo.SlatePPOConfig, ppo.train),
}
RUN_ALGOS = {a.algo: a for a in ALGORITHMS.values()}
"""Run-directory algorithm names of slate runs (what ``config.json`` says)."""


def _report(final: dict[str, Any]) -> str:
    rate = final.get("metrics", {}).get("choice_rate", float("nan"))
    return (f"final evaluation at step {final['step']}: return {final['return_mean']:.2f} "
            f"± {final['return_std']:.2f} over {len(final['returns'])} users, choice rate {rate:.3f}")


def train_main(argv: list[str]) -> int:
    """``rlcore train slate ...``; returns the exit status."""
    return adapter_train_main("slate", ALGORITHMS, "slateq", argv, _report)


def load_agent(run_dir: str | Path, device: str = "cpu") -> tuple[Any, Any, dict[str, Any]]:
    """``(agent, config, checkpoint)`` of a slate run's newest checkpoint that loads."""
    algorithm, config, checkpoint = load_run(run_dir, "slate", ALGORITHMS, device)
    env = SlateEnv.from_config(config.slate, 1, device)
    if algorithm.method == "slateq":
        # The saved state holds the choice model (learned or true): start from the true one instead of refitting.
        agent = slateq.SlateQAgent(config, env.items, env.choice_model, device)
    else:
        agent = ppo.SlatePPOAgent(config, env.items, device)
    agent.load_state_dict(checkpoint["agent"])
    return agent, config, checkpoint


def evaluate_run(run_dir: str | Path, episodes: int | None = None, seed: int | None = None,
                 device: str = "cpu") -> dict[str, Any]:
    """Evaluate a slate run's saved agent like the run's own evaluations (same seed and number of users by
    default, so the last evaluation is reproduced). Returns what :func:`rlcore.cli.evaluate_run` does."""
    agent, config, checkpoint = load_agent(run_dir, device)
    return evaluate_saved_agent(agent, config, checkpoint,
                                lambda n, seed: SlateEnv.from_config(config.slate, n, device), episodes, seed)


__all__ = ["ALGORITHMS", "RUN_ALGOS", "evaluate_run", "load_agent", "train_main"]
