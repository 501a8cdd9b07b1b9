"""CAQL with exact max-Q in the training loop learns Pendulum with the action bound 1 (issue: CAQL in full).

A random policy scores about -1200 on Pendulum-v1; the assertions ask for clearly better than that.
"""

import json

import pytest
import torch

from rlcore.algos.caql import CAQLConfig, train
from rlcore.loops import EnvConfig

ACCELERATED = dict(env=EnvConfig("Pendulum-v1", action_bound=1.0), dual_filter=True, cluster_radius=0.1,
                   eval_episodes=5, progress=False)


@pytest.mark.slow  # a learning run of minutes: the slow set, which CI runs after the default suite
def test_caql_bnb_learns_constrained_pendulum(tmp_path):
    # Measured on a 2-core AMD EPYC (2026-12-01): -1015 at 5k steps (the same before and after the runtime
    # refactor: this machine's kernels differ from the one where 5k steps once sufficed), -371 at 7.5k.
    config = CAQLConfig(**ACCELERATED, solver="bnb", total_steps=7500, eval_interval=2500, seed=3,
                        solver_options={"ga_starts": 8, "ga_iterations": 20}, run_dir=str(tmp_path / "bnb"))
    result = train(config)
    assert result.final_return > -800, result.evaluations
    summary = json.loads((result.run_dir / "summary.json").read_text())
    # The filter and the clustering must have saved a good share of the solves.
    assert summary["maxq_fraction_avoided"] > 0.2, summary


@pytest.mark.slow
def test_caql_scip_learns_constrained_pendulum(tmp_path):
    # SCIP solves one MIP per state (about 0.1 s each here), so this run clusters more coarsely and solves
    # in this process (a worker pool per 64-state batch costs more than it saves on 2 cores).
    # Measured with this setting: -811 after 5k steps, and -940 after 7k in another run; a random policy
    # scores -1366 under the same evaluation (benchmarks/results/caql_mujoco.json), so -1100 is clearly above it.
    config = CAQLConfig(**{**ACCELERATED, "cluster_radius": 0.3}, solver="scip", total_steps=5000,
                        eval_interval=2500, seed=3, solver_time_limit=2.0, solver_options={"workers": 1},
                        run_dir=str(tmp_path / "scip"))
    result = train(config)
    assert result.final_return > -1100, result.evaluations


@pytest.mark.parametrize("solver", ["ga", "cem", "bnb", "exact"])
def test_caql_trains_end_to_end_on_an_l2_ball(tmp_path, solver):
    # Hopper with ||a||_2 <= 0.5: every action the agent applies and every max-Q answer stay in the ball.
    config = CAQLConfig(env=EnvConfig("Hopper-v5", action_bound=0.5, action_set="l2_ball"), solver=solver,
                        total_steps=400, learning_starts=200, eval_interval=400, eval_episodes=2, progress=False,
                        run_dir=str(tmp_path / solver))
    result = train(config)
    agent = result.agent
    assert agent.action_set.kind == "l2_ball" and agent.action_set.radius == 0.5
    obs = torch.randn(64, 11)
    for deterministic in (True, False):
        assert agent.action_set.contains(agent.act(obs, deterministic=deterministic)).all()
    answer = agent.solver.solve(agent.q_relu, obs, agent.action_set)
    assert (answer.actions.norm(dim=1) <= 0.5 + 1e-5).all()
    assert result.evaluations and result.evaluations[-1]["step"] == 400
