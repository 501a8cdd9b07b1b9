"""rlcore.models: stacked MLPs, the probabilistic ensemble on a known linear system, normalisers, holdout
split, termination functions against gymnasium, the horizon schedule and model rollouts."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlcore.models import (
    ModelEnv,
    ProbabilisticEnsemble,
    collect_rollouts,
    fit_ensemble,
    holdout_mask,
    rollout_horizon,
    termination_fn,
)
from rlcore.networks import EnsembleMLP
from solvers import ActionSet

A = torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.8, 0.2], [0.1, 0.0, 0.95]])
B = torch.tensor([[0.5], [0.0], [-0.3]])


def linear_system(n: int, generator: torch.Generator, noise: float = 0.01):
    """s' = A s + B a + noise, r = -0.1 |s|^2 + a: a known system for the ensemble to fit."""
    obs = torch.randn(n, 3, generator=generator)
    actions = torch.rand(n, 1, generator=generator) * 2 - 1
    next_obs = obs @ A.T + actions @ B.T + noise * torch.randn(n, 3, generator=generator)
    rewards = -0.1 * obs.pow(2).sum(1) + actions[:, 0]
    return obs, actions, next_obs, rewards


def test_ensemble_mlp_matches_a_loop_over_members():
    net = EnsembleMLP(3, 4, (8, 8), 2)
    x = torch.randn(5, 4)
    out = net(x)
    assert out.shape == (3, 5, 2)
    for e in range(3):
        h = x
        for index, layer in enumerate(net.layers):
            h = h @ layer.weight[e] + layer.bias[e] if index % 2 == 0 else torch.relu(h)
        torch.testing.assert_close(out[e], h)
    torch.testing.assert_close(net(x.expand(3, 5, 4)), out)


def test_ensemble_fits_a_known_linear_system_to_low_error():
    generator = torch.Generator().manual_seed(0)
    model = ProbabilisticEnsemble(3, 1, ensemble_size=5, num_elites=3, hidden_sizes=(64, 64))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    result = fit_ensemble(model, optimizer, *linear_system(3000, generator), max_epochs=40, generator=generator)
    assert result["elites"].shape == (3,) and len(set(result["elites"].tolist())) == 3
    # The elites are the members with the lowest holdout error.
    assert result["holdout_mse"][result["elites"]].max() <= result["holdout_mse"].min() + 1e-12 or \
        set(result["elites"].tolist()) == set(torch.argsort(result["holdout_mse"])[:3].tolist())
    obs, actions, _, _ = linear_system(500, generator)
    prediction = model.predict(obs, actions, deterministic=True)
    truth_next = obs @ A.T + actions @ B.T
    truth_reward = -0.1 * obs.pow(2).sum(1) + actions[:, 0]
    # Noise variance is 1e-4 per dimension; the fitted mean is within a few times that.
    assert (prediction.next_obs - truth_next).pow(2).mean() < 1e-3
    assert (prediction.rewards - truth_reward).pow(2).mean() < 1e-2
    # The learned variance of the next-state delta is near the true noise (std 0.01), not the initial bound.
    _, logvar = model(obs, actions)
    std = ((0.5 * logvar[..., :3]).exp() * model.target_std[:3]).mean()
    assert 0.003 < std < 0.03


def test_variance_is_soft_clamped_between_learned_bounds():
    model = ProbabilisticEnsemble(2, 1, ensemble_size=2, num_elites=1, hidden_sizes=(8,))
    with torch.no_grad():
        model.net.layers[-1].bias.fill_(1e3)  # raw log-variances far above the upper bound
    _, logvar = model(torch.zeros(4, 2), torch.zeros(4, 1))
    assert (logvar <= model.max_logvar + 1e-3).all() and torch.isfinite(logvar).all()
    with torch.no_grad():
        model.net.layers[-1].bias.fill_(-1e3)
    _, logvar = model(torch.zeros(4, 2), torch.zeros(4, 1))
    assert (logvar >= model.min_logvar - 1e-3).all()


def test_running_normaliser_matches_the_whole_data_and_is_saved():
    generator = torch.Generator().manual_seed(1)
    obs, actions, next_obs, rewards = linear_system(1000, generator)
    obs = obs * 3 + 2
    whole = ProbabilisticEnsemble(3, 1, 2, 1, (8,))
    whole.set_normalizer(obs, actions, next_obs, rewards)
    running = ProbabilisticEnsemble(3, 1, 2, 1, (8,))
    for start in range(0, 1000, 128):
        sl = slice(start, start + 128)
        running.update_normalizer(obs[sl], actions[sl], next_obs[sl], rewards[sl])
    for name in ("input_mean", "input_std", "target_mean", "target_std"):
        torch.testing.assert_close(getattr(running, name), getattr(whole, name), rtol=1e-4, atol=1e-5)
        assert name in running.state_dict()
    torch.testing.assert_close(whole.input_mean[:3], obs.mean(0))


def test_holdout_split_is_fixed_per_transition():
    generator = torch.Generator().manual_seed(2)
    obs, actions = torch.randn(20_000, 5, generator=generator), torch.randn(20_000, 2, generator=generator)
    key = torch.randn(7, generator=generator)
    mask = holdout_mask(obs, actions, 0.2, key)
    assert abs(mask.float().mean().item() - 0.2) < 0.02
    permutation = torch.randperm(20_000, generator=generator)
    assert torch.equal(holdout_mask(obs[permutation], actions[permutation], 0.2, key), mask[permutation])


@pytest.mark.parametrize("env_id", ["Hopper-v5", "Walker2d-v5", "InvertedPendulum-v5", "HalfCheetah-v5"])
def test_termination_functions_agree_with_gymnasium(env_id):
    done_fn = termination_fn(env_id)
    env = gym.make(env_id)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    agreements, terminations = 0, 0
    for _ in range(600):
        action = rng.uniform(env.action_space.low, env.action_space.high).astype(np.float32)
        next_obs, _, terminated, truncated, _ = env.step(action)
        predicted = done_fn(torch.as_tensor(obs)[None], torch.as_tensor(action)[None],
                            torch.as_tensor(next_obs, dtype=torch.float32)[None])
        assert bool(predicted) == terminated, (env_id, next_obs)
        agreements += 1
        terminations += int(terminated)
        obs = env.reset()[0] if terminated or truncated else next_obs
    env.close()
    assert agreements == 600
    assert (terminations > 0) == (env_id != "HalfCheetah-v5")
    assert termination_fn("NoSuchTask-v0") is None


def test_horizon_schedule():
    schedule = (20, 100, 1, 5)
    assert [rollout_horizon(s, schedule) for s in (0, 20, 60, 100, 1000)] == [1, 1, 3, 5, 5]
    assert rollout_horizon(10**6, (0, 0, 1, 4)) == 4


def test_model_env_follows_the_batched_env_contract():
    torch.manual_seed(3)
    generator = torch.Generator().manual_seed(3)
    model = ProbabilisticEnsemble(3, 1, ensemble_size=3, num_elites=2, hidden_sizes=(16,))
    action_set = ActionSet.box(-1.0, 1.0, dim=1)
    # Terminate when the first coordinate of the next state is positive.
    env = ModelEnv(model, action_set, lambda o, a, n: n[:, 0] > 0, horizon=3, generator=generator)
    start = torch.randn(6, 3, generator=generator)
    obs, _ = env.reset(start)
    never_ended = torch.ones(6, dtype=torch.bool)
    for step in range(1, 4):
        actions = 5 * torch.randn(6, 1, generator=generator)  # outside the set: projected
        obs, rewards, terminated, truncated, info = env.step(actions)
        assert obs.shape == (6, 3) and rewards.shape == (6,) and terminated.dtype == torch.bool
        assert action_set.contains(info["applied_actions"]).all()
        torch.testing.assert_close(terminated, info["final_obs"][:, 0] > 0)
        assert not (truncated & terminated).any()
        # Rows that ran the whole horizon without ending are cut at its last step, the others are not.
        assert torch.equal(truncated, never_ended & ~terminated) if step == 3 else not truncated.any()
        ended = terminated | truncated
        never_ended &= ~ended
        # Rows that ended restart at one of the start states (same-step auto-reset).
        for row in ended.nonzero().flatten().tolist():
            assert (obs[row] == start).all(dim=1).any()
    batch = collect_rollouts(env, lambda o: torch.zeros(o.shape[0], 1), start, steps=4)
    assert batch.obs.shape == (24, 3) and batch.next_obs.shape == (24, 3) and batch.terminated.shape == (24,)
