"""PPO and RWR: advantages on a hand-built rollout, the normaliser, resume equality, the CLI, short learning runs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from rlcore.algos import ppo, rwr
from rlcore.loops import Rollout
from rlcore.networks import ObsNormalizer
from rlcore.objectives import discounted_returns, gae
from solvers import ActionSet


def _agent(cls, config, obs_dim=3, action_set=None):
    return cls(config, obs_dim, action_set or ActionSet.box(-2.0, 2.0, dim=1))


def _rollout(T=6, N=2, obs_dim=3, seed=0) -> Rollout:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(T, N, obs_dim, generator=g)
    final_obs = torch.cat([obs[1:], torch.randn(1, N, obs_dim, generator=g)])
    terminated = torch.zeros(T, N, dtype=torch.bool)
    truncated = torch.zeros(T, N, dtype=torch.bool)
    terminated[2, 0] = True
    truncated[3, 1] = True
    # At an episode end the env has reset: final_obs is the true last observation, not the next row's obs.
    final_obs[2, 0] = torch.randn(obs_dim, generator=g)
    final_obs[3, 1] = torch.randn(obs_dim, generator=g)
    return Rollout(obs=obs, actions=torch.randn(T, N, 1, generator=g), rewards=torch.randn(T, N, generator=g),
                   terminated=terminated, truncated=truncated, final_obs=final_obs, extras={"norm_obs": obs})


def test_ppo_advantages_bootstrap_from_final_obs():
    agent = _agent(ppo.PPOAgent, ppo.PPOConfig(normalize_obs=False, gamma=0.9, gae_lambda=0.8))
    r = _rollout()
    values, adv, ret = agent.advantages(r)
    with torch.no_grad():
        v = agent.model.value(r.obs)
        next_v = agent.model.value(r.final_obs)  # V of the true next observation, everywhere
    torch.testing.assert_close(values, v)
    expected_adv, expected_ret = gae(r.rewards, v, next_v, r.terminated, r.truncated, 0.9, 0.8)
    torch.testing.assert_close(adv, expected_adv)
    torch.testing.assert_close(ret, expected_ret)


def test_rwr_weights_use_returns_to_go_and_average_one():
    agent = _agent(rwr.RWRAgent, rwr.RWRConfig(normalize_obs=False, gamma=0.9, baseline=False, standardize=False,
                                               beta=2.0))
    r = _rollout()
    weights, returns, metrics = agent.weights(r)
    with torch.no_grad():
        expected = discounted_returns(r.rewards, r.terminated, r.truncated, 0.9, agent.model.value(r.final_obs))
    torch.testing.assert_close(returns, expected)
    torch.testing.assert_close(weights, weights.numel() * torch.softmax((expected / 2.0).flatten(), 0).view(6, 2))
    assert 0 < metrics["ess_fraction"] <= 1


def test_obs_normalizer_matches_batch_statistics():
    g = torch.Generator().manual_seed(0)
    data = torch.randn(1000, 4, generator=g) * torch.tensor([1.0, 5.0, 0.1, 2.0]) + torch.tensor([0, 3, -1, 10])
    norm = ObsNormalizer(4)
    for chunk in data.split(37):
        norm.update(chunk)
    torch.testing.assert_close(norm.mean.float(), data.mean(0), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(norm.var.float(), data.var(0, unbiased=False), atol=1e-3, rtol=1e-3)
    assert norm(data).abs().max() <= 10.0
    assert {"mean", "var", "count"} <= set(norm.state_dict())


def test_squashed_ppo_respects_the_action_box():
    box = ActionSet.box(-0.25, 0.25, dim=2)
    agent = _agent(ppo.PPOAgent, ppo.PPOConfig(squash=True, init_log_std=1.0), obs_dim=3, action_set=box)
    actions, extras = agent.explore(torch.randn(500, 3))
    assert actions.abs().max() <= 0.25 and torch.isfinite(extras["log_prob"]).all()
    assert agent.act(torch.randn(7, 3), deterministic=True).abs().max() <= 0.25


def test_config_errors():
    with pytest.raises(ValueError, match="divisible"):
        ppo.PPOConfig(num_steps=100, num_minibatches=32).validate()
    with pytest.raises(ValueError, match="beta"):
        rwr.RWRConfig(beta=0.0).validate()


TINY = dict(env="Pendulum-v1", num_steps=64, num_minibatches=4, update_epochs=2, eval_episodes=2,
            eval_interval=128, checkpoint_interval=128, progress=False)


@pytest.mark.parametrize("module", [ppo, rwr], ids=["ppo", "rwr"])
def test_resume_reproduces_an_uninterrupted_run(module, tmp_path):
    config_cls = module.PPOConfig if module is ppo else module.RWRConfig
    straight = module.train(config_cls(**TINY, total_steps=256, run_dir=str(tmp_path / "a")))
    module.train(config_cls(**TINY, total_steps=128, run_dir=str(tmp_path / "b")))
    resumed = module.train(config_cls(**TINY, total_steps=256, resume=str(tmp_path / "b")))
    for p, q in zip(straight.agent.model.parameters(), resumed.agent.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=0, rtol=0)
    assert [e["return_mean"] for e in straight.evaluations] == [e["return_mean"] for e in resumed.evaluations]


def test_cli_trains_resumes_and_evaluates_ppo(tmp_path):
    def rlcore(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "rlcore.cli", *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)

    tiny = ["--num-steps", "64", "--num-minibatches", "4", "--update-epochs", "1", "--eval-interval", "128",
            "--eval-episodes", "2", "--checkpoint-interval", "128", "--no-progress"]
    done = rlcore("train", "ppo", "--env", "Pendulum-v1", "--total-steps", "128", "--log-root", "logs", *tiny)
    assert done.returncode == 0, done.stderr
    assert "final evaluation at step 128" in done.stdout
    (run_dir,) = (tmp_path / "logs").iterdir()
    assert json.loads((run_dir / "config.json").read_text())["algo"] == "ppo"
    more = rlcore("train", "ppo", "--resume", str(run_dir), "--total-steps", "256", "--no-progress")
    assert more.returncode == 0, more.stderr
    assert "final evaluation at step 256" in more.stdout
    evaluated = rlcore("eval", str(run_dir), "--episodes", "2")
    assert evaluated.returncode == 0 and "over 2 episodes" in evaluated.stdout, evaluated.stderr


@pytest.mark.slow  # a learning run of minutes: the slow set, which CI runs after the default suite
@pytest.mark.parametrize("module", [ppo, rwr], ids=["ppo", "rwr"])
def test_learns_inverted_pendulum_at_a_small_budget(module, tmp_path):
    # A uniformly random policy scores about 5 here (the pole falls within a few steps); 1000 is the maximum.
    config_cls = module.PPOConfig if module is ppo else module.RWRConfig
    result = module.train(config_cls(env="InvertedPendulum-v5", total_steps=12_288, eval_interval=12_288,
                                     eval_episodes=5, seed=1, progress=False, run_dir=str(tmp_path / "run")))
    print(module.__name__, result.final_return)
    assert result.final_return > 100
