"""benchmarks/diagnose_episodes.py: a finished run's episodes, replayed, with the critic's value at the start."""

from __future__ import annotations

import sys
from pathlib import Path

import gymnasium as gym
import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from diagnose_episodes import diagnose  # noqa: E402

from rlcore.algos import load_agent  # noqa: E402
from rlcore.algos.caql import CAQLConfig, train  # noqa: E402
from rlcore.loops import EnvConfig  # noqa: E402


def test_diagnosis_of_a_caql_run_on_constrained_pendulum(tmp_path):
    run_dir = tmp_path / "run"
    config = CAQLConfig(env=EnvConfig("Pendulum-v1", action_bound=0.5), total_steps=300, learning_starts=100,
                        eval_interval=300, eval_episodes=1, checkpoint_interval=300, progress=False,
                        run_dir=str(run_dir))
    train(config)
    result = diagnose(run_dir, episodes=2, seed=7)
    assert result["algo"] == "caql" and result["step"] == 300
    for episode in result["episodes"]:
        # Pendulum never terminates and truncates at 200 steps; its rewards are <= 0, so the discounted return
        # lies between the undiscounted one and 0.
        assert episode["length"] == 200 and not episode["terminated"]
        assert episode["return"] <= episode["return_start"] <= 0
        assert 0.0 <= episode["at_bound"] <= 1.0
    # q_start is the run's own critic at the first state of the episode seeded 7, at its projected action.
    agent = load_agent(run_dir).agent
    obs = torch.as_tensor(gym.make("Pendulum-v1").reset(seed=7)[0], dtype=torch.float32)[None]
    action = agent.action_set.project(agent.act(obs, 300, deterministic=True))
    assert result["episodes"][0]["q_start"] == pytest.approx(agent.q(obs, action).item(), rel=1e-6)
    assert result["mean"]["length"] == 200
