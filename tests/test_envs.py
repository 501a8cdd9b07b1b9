"""The BatchedEnv contract: shapes, dtypes, device, same-step auto-reset, final_obs, errors, constraints."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlcore import envs
from solvers import ActionSet


def test_shapes_dtypes_and_device():
    env = envs.make("Hopper-v5", num_envs=3, seed=0)
    obs, info = env.reset(seed=0)
    assert obs.shape == (3, 11) and obs.dtype == torch.float32 and obs.device == env.device
    assert isinstance(env, envs.BatchedEnv)
    assert isinstance(env.action_space, gym.spaces.Box) and env.action_space.shape == (3,)
    obs, reward, terminated, truncated, info = env.step(torch.zeros(3, 3))
    assert reward.shape == (3,) and reward.dtype == torch.float32
    assert terminated.dtype == torch.bool and truncated.dtype == torch.bool
    assert info["final_obs"].shape == (3, 11)
    env.close()


def test_truncation_auto_resets_in_the_same_step_with_final_obs():
    env = envs.make("Pendulum-v1", num_envs=2, seed=0)
    obs, _ = env.reset(seed=3)
    reference = gym.make("Pendulum-v1")
    ref_obs, _ = reference.reset(seed=3)
    np.testing.assert_allclose(obs[0].numpy(), ref_obs, rtol=1e-6)
    action = torch.full((2, 1), 0.5)
    for t in range(200):
        obs, reward, terminated, truncated, info = env.step(action)
        ref_obs, ref_reward, *_ = reference.step(np.array([0.5], dtype=np.float32))
        np.testing.assert_allclose(info["final_obs"][0].numpy(), ref_obs, rtol=1e-5, atol=1e-6)
        assert reward[0].item() == pytest.approx(ref_reward, rel=1e-5, abs=1e-6)
        if t < 199:
            assert not truncated.any()
            torch.testing.assert_close(info["final_obs"], obs)
    assert truncated.all() and not terminated.any()
    # The returned observation already starts the next episode; the true last one is in final_obs.
    assert not torch.allclose(obs, info["final_obs"])
    assert (obs[:, 0].pow(2) + obs[:, 1].pow(2) - 1).abs().max() < 1e-5  # (cos, sin) of a fresh angle
    obs2, *_ = env.step(action)  # and the episode goes on from it: no extra reset step
    assert not torch.equal(obs2, obs)


def test_termination_is_reported_apart_from_truncation():
    env = envs.make("Hopper-v5", num_envs=2, seed=1)
    env.reset(seed=1)
    g = torch.Generator().manual_seed(0)
    seen_termination = False
    for _ in range(400):
        obs, _, terminated, truncated, info = env.step(torch.rand(2, 3, generator=g) * 2 - 1)
        if terminated.any():
            seen_termination = True
            row = int(terminated.nonzero()[0])
            assert not truncated[row]
            assert not torch.equal(info["final_obs"][row], obs[row])
            break
    assert seen_termination, "random actions should make Hopper fall within 400 steps"


def test_actions_outside_the_set_are_projected_before_the_simulator():
    env = envs.make("Pendulum-v1", num_envs=1, seed=0, action_bound=0.5)
    assert env.action_space.low.tolist() == [-0.5] and env.action_space.high.tolist() == [0.5]
    env.reset(seed=7)
    _, reward, *_ , info = env.step(torch.tensor([[1.7]]))
    assert info["applied_actions"].tolist() == [[0.5]]
    reference = gym.make("Pendulum-v1")
    reference.reset(seed=7)
    _, ref_reward, *_ = reference.step(np.array([0.5], dtype=np.float32))
    assert reward.item() == pytest.approx(ref_reward, rel=1e-6)


def test_l2_ball_constraint():
    env = envs.make("Hopper-v5", num_envs=2, seed=0, action_set=ActionSet.l2_ball(0.0, 0.5))
    env.reset(seed=0)
    *_, info = env.step(torch.ones(2, 3))
    applied = info["applied_actions"]
    torch.testing.assert_close(applied.norm(dim=1), torch.full((2,), 0.5))


def test_box_is_intersected_with_native_box():
    env = envs.make("Hopper-v5", action_bound=2.0)
    assert env.action_set.high.tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    ("actions", "message"),
    [
        (torch.zeros(2, 2), r"shape \[num_envs, \*action_shape\] = \[2, 3\]"),
        (torch.zeros(3, 3), r"\[2, 3\], got \[3, 3\]"),
        (torch.tensor([[0.0, float("nan"), 0.0], [0.0, 0.0, 0.0]]), r"NaN or infinite values \(rows \[0\]\)"),
        (torch.zeros(2, 3, dtype=torch.long), "floating-point"),
        (np.zeros((2, 3)), "torch.Tensor"),
    ],
)
def test_bad_actions_raise(actions, message):
    env = envs.make("Hopper-v5", num_envs=2, seed=0)
    with pytest.raises(ValueError, match=message):
        env.step(actions)


def test_unknown_id_and_constrained_discrete_space_raise():
    with pytest.raises(ValueError, match="unknown or unavailable environment id 'Hoper-v5'"):
        envs.make("Hoper-v5")
    with pytest.raises(ValueError, match="CartPole-v1 has a Discrete action space; action_set/action_bound"):
        envs.make("CartPole-v1", action_bound=1.0)
    with pytest.raises(ValueError, match="either action_set or action_bound"):
        envs.make("Pendulum-v1", action_bound=1.0, action_set=ActionSet.box(-1.0, 1.0))


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "Hopper-v5"])
def test_state_dict_restores_the_simulator_exactly(env_id):
    env = envs.make(env_id, num_envs=2, seed=0)
    g = torch.Generator().manual_seed(0)
    dim = env.action_dim
    for _ in range(7):
        env.step(torch.rand(2, dim, generator=g) * 2 - 1)
    state = env.state_dict()
    actions = [torch.rand(2, dim, generator=g) * 2 - 1 for _ in range(30)]
    first = [env.step(a)[:4] for a in actions]
    env.load_state_dict(state)
    second = [env.step(a)[:4] for a in actions]
    for one, two in zip(first, second, strict=True):
        for x, y in zip(one, two, strict=True):
            assert torch.equal(x, y)


def test_async_vectorization_matches_sync():
    sync = envs.make("Pendulum-v1", num_envs=2, seed=0)
    asyn = envs.make("Pendulum-v1", num_envs=2, seed=0, vectorization="async")
    try:
        a, _ = sync.reset(seed=5)
        b, _ = asyn.reset(seed=5)
        torch.testing.assert_close(a, b)
        action = torch.tensor([[0.3], [-0.2]])
        torch.testing.assert_close(sync.step(action)[0], asyn.step(action)[0])
    finally:
        asyn.close()
