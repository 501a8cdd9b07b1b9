"""The torch backend: gymnasium's dynamics step by step, the BatchedEnv contract, errors, resume, learning."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlcore import envs
from rlcore.envs.torch_envs import MountainCarContinuousTorch, PendulumTorch, PointMassTorch
from solvers import ActionSet


def _gym_unwrapped(env_id: str) -> gym.Env:
    env = gym.make(env_id)
    env.reset(seed=0)
    return env.unwrapped


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_pendulum_matches_gymnasium_step_by_step(dtype):
    n = 64
    env = PendulumTorch(num_envs=n, dtype=dtype)
    env.reset(seed=0)
    g = torch.Generator().manual_seed(0)
    # States beyond the reset range too: fast spins, angles of several turns, the speed clip.
    env.set_state(torch.stack([torch.rand(n, generator=g, dtype=torch.float64) * 20 - 10,
                               torch.rand(n, generator=g, dtype=torch.float64) * 18 - 9], dim=1))
    reference = _gym_unwrapped("Pendulum-v1")
    # Observations and rewards are float32 by contract; the float64 state itself matches to round-off.
    tolerance = {"rtol": 1e-6, "atol": 1e-6} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-5}
    for _ in range(20):
        state = env.get_state().double().numpy()
        actions = torch.rand(n, 1, generator=g) * 5 - 2.5  # outside the box too: projected to [-2, 2]
        obs, reward, terminated, truncated, info = env.step(actions)
        for i in range(n):
            reference.state = state[i].copy()
            ref_obs, ref_reward, ref_terminated, _, _ = reference.step(info["applied_actions"][i].numpy())
            np.testing.assert_allclose(obs[i].numpy(), ref_obs, **tolerance)
            np.testing.assert_allclose(reward[i].item(), ref_reward, **tolerance)
            assert bool(terminated[i]) == ref_terminated
            if dtype == torch.float64:
                np.testing.assert_allclose(env.get_state()[i].numpy(), reference.state, rtol=1e-12, atol=1e-12)
        assert info["applied_actions"].abs().max() <= 2.0
        assert not truncated.any()


def test_pendulum_float64_trajectory_stays_with_gymnasium():
    # Without re-synchronising: 200 steps of one episode, identical to round-off in float64.
    env = PendulumTorch(num_envs=1, dtype=torch.float64)
    env.reset(seed=0)
    reference = _gym_unwrapped("Pendulum-v1")
    reference.state = env.get_state()[0].numpy().copy()
    g = torch.Generator().manual_seed(1)
    for _ in range(199):
        action = torch.rand(1, 1, generator=g) * 4 - 2
        obs, reward, *_ = env.step(action)
        ref_obs, ref_reward, *_ = reference.step(action[0].numpy())
        np.testing.assert_allclose(obs[0].numpy(), ref_obs, rtol=1e-5, atol=1e-6)
        assert reward.item() == pytest.approx(ref_reward, rel=1e-5, abs=1e-6)


def test_mountain_car_matches_gymnasium_step_by_step():
    n = 256
    env = MountainCarContinuousTorch(num_envs=n)
    env.reset(seed=0)
    g = torch.Generator().manual_seed(0)
    reference = _gym_unwrapped("MountainCarContinuous-v0")
    seen_goal = seen_wall = False
    for _ in range(5):
        # Whole state space, so the goal (termination) and the left wall (velocity reset) both occur.
        state = torch.stack([torch.rand(n, generator=g) * 1.8 - 1.2, torch.rand(n, generator=g) * 0.14 - 0.07], 1)
        env.set_state(state)
        actions = torch.rand(n, 1, generator=g) * 2.4 - 1.2
        _, reward, terminated, truncated, info = env.step(actions)
        for i in range(n):
            reference.state = state[i].numpy().copy()
            ref_obs, ref_reward, ref_terminated, _, _ = reference.step(info["applied_actions"][i].numpy())
            np.testing.assert_allclose(info["final_obs"][i].numpy(), ref_obs, rtol=1e-5, atol=1e-6)
            assert reward[i].item() == pytest.approx(ref_reward, rel=1e-5, abs=1e-6)
            assert bool(terminated[i]) == ref_terminated
            seen_goal |= ref_terminated
            seen_wall |= bool(ref_obs[0] == -1.2)
        assert not truncated.any()
    assert seen_goal and seen_wall


@pytest.mark.parametrize(("env_id", "limit"), [("Pendulum-v1", 200), ("MountainCarContinuous-v0", 999),
                                               ("PointMass-v0", 100)])
def test_time_limit_matches_gymnasium_registration(env_id, limit):
    env = envs.make(env_id, num_envs=3, seed=0, backend="torch")
    if env_id in gym.registry:
        assert gym.spec(env_id).max_episode_steps == limit
    zeros = torch.zeros(3, env.action_dim)
    for t in range(1, limit + 1):
        obs, _, terminated, truncated, info = env.step(zeros)
        if env_id == "MountainCarContinuous-v0":
            assert not terminated.any()  # with no force the car never reaches the goal
        assert bool(truncated.all()) == (t == limit) and bool(truncated.any()) == (t == limit)
    assert not torch.equal(obs, info["final_obs"])


def test_auto_reset_final_obs_and_per_row_counters():
    env = MountainCarContinuousTorch(num_envs=4)
    env.reset(seed=0)
    # Rows 1 and 3 sit just before the goal and reach it this step; rows 0 and 2 are far from it.
    env.set_state(torch.tensor([[-0.5, 0.0], [0.449, 0.05], [-0.5, 0.0], [0.449, 0.05]]))
    before = env.get_state()
    obs, reward, terminated, truncated, info = env.step(torch.ones(4, 1))
    assert terminated.tolist() == [False, True, False, True] and not truncated.any()
    assert reward[1].item() == pytest.approx(100 - 0.1)
    final = info["final_obs"]
    assert final.shape == obs.shape == (4, 2) and final.dtype == torch.float32
    torch.testing.assert_close(final[[0, 2]], obs[[0, 2]])
    assert (final[[1, 3], 0] >= 0.45).all()
    # The returned rows 1 and 3 are fresh episodes: x in [-0.6, -0.4], v = 0.
    assert ((obs[[1, 3], 0] >= -0.6) & (obs[[1, 3], 0] <= -0.4)).all() and (obs[[1, 3], 1] == 0).all()
    assert not torch.equal(env.get_state()[1], before[1])
    # Their step counters restarted: rows 0 and 2 truncate one step before rows 1 and 3.
    env2 = MountainCarContinuousTorch(num_envs=2, max_episode_steps=3)
    env2.reset(seed=0)
    env2.set_state(torch.tensor([[-0.5, 0.0], [0.449, 0.05]]))
    flags = [tuple((t | u).tolist()) for _, _, t, u, _ in (env2.step(torch.zeros(2, 1)) for _ in range(4))]
    assert flags == [(False, True), (False, False), (True, False), (False, True)]


def test_same_seed_same_rollout_and_reset_reseeds():
    a = envs.make("PointMass-v0", num_envs=5, seed=3)
    b = envs.make("PointMass-v0", num_envs=5, seed=3)
    actions = torch.rand(5, 2) * 2 - 1
    for _ in range(150):  # crosses an auto-reset at step 100
        out_a, out_b = a.step(actions), b.step(actions)
        for x, y in zip(out_a[:4], out_b[:4], strict=True):
            assert torch.equal(x, y)
    first, _ = a.reset(seed=11)
    again, _ = a.reset(seed=11)
    other, _ = a.reset(seed=12)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert len({tuple(row.tolist()) for row in first}) == 5  # rows draw different initial states


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "MountainCarContinuous-v0", "PointMass-v0"])
def test_state_dict_resumes_exactly(env_id):
    env = envs.make(env_id, num_envs=3, seed=0, backend="torch", max_episode_steps=10)
    g = torch.Generator().manual_seed(0)
    for _ in range(7):
        env.step(torch.rand(3, env.action_dim, generator=g) * 2 - 1)
    state = env.state_dict()
    actions = [torch.rand(3, env.action_dim, generator=g) * 2 - 1 for _ in range(25)]  # two auto-resets
    first = [env.step(a)[:4] for a in actions]
    fresh = envs.make(env_id, num_envs=3, seed=99, backend="torch", max_episode_steps=10)
    fresh.load_state_dict(state)
    second = [fresh.step(a)[:4] for a in actions]
    for one, two in zip(first, second, strict=True):
        for x, y in zip(one, two, strict=True):
            assert torch.equal(x, y)
    with pytest.raises(ValueError, match=r"environment state is for 3 x"):
        envs.make(env_id, num_envs=4, backend="torch").load_state_dict(state)


def test_point_mass_reward_and_walls():
    env = PointMassTorch(num_envs=2)
    env.reset(seed=0)
    env.set_state(torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.5, 0.0], [0.999, 0.0, 1.0, 0.0, 0.0, 0.0]]))
    obs, reward, terminated, _, _ = env.step(torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    # Row 0: v = 0.05 * 1, x = 0.05 * 0.05; reward = -|0.5 - x| - 0.1 * 1.
    assert obs[0, 2].item() == pytest.approx(0.05) and obs[0, 0].item() == pytest.approx(0.0025)
    assert reward[0].item() == pytest.approx(-(0.5 - 0.0025) - 0.1)
    # Row 1 hits the wall at x = 1: it stops there.
    assert obs[1, 0].item() == 1.0 and obs[1, 2].item() == 0.0
    assert obs[0, 4].item() == pytest.approx(0.5 - 0.0025)
    assert not terminated.any()


def test_contract_shapes_and_action_sets():
    env = envs.make("Pendulum-v1", num_envs=4, seed=0, backend="torch", action_bound=0.5)
    assert isinstance(env, envs.BatchedEnv) and env.obs_dim == 3 and env.action_dim == 1
    assert env.action_space.high.tolist() == [0.5]
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 3) and obs.dtype == torch.float32
    obs, reward, terminated, truncated, info = env.step(torch.full((4, 1), 3.0, dtype=torch.float64))
    assert reward.shape == (4,) and reward.dtype == torch.float32
    assert terminated.dtype == truncated.dtype == torch.bool
    assert info["applied_actions"].tolist() == [[0.5]] * 4
    ball = envs.make("PointMass-v0", num_envs=2, seed=0, action_set=ActionSet.l2_ball(0.0, 0.5))
    *_, info = ball.step(torch.ones(2, 2))
    torch.testing.assert_close(info["applied_actions"].norm(dim=1), torch.full((2,), 0.5))


@pytest.mark.parametrize(
    ("actions", "message"),
    [
        (torch.zeros(2, 2), r"shape \[num_envs, \*action_shape\] = \[2, 1\]"),
        (torch.tensor([[0.0], [float("nan")]]), r"NaN or infinite values \(rows \[1\]\)"),
        (torch.zeros(2, 1, dtype=torch.long), "floating-point"),
        (np.zeros((2, 1)), "torch.Tensor"),
    ],
)
def test_bad_actions_raise(actions, message):
    env = envs.make("Pendulum-v1", num_envs=2, seed=0, backend="torch")
    with pytest.raises(ValueError, match=message):
        env.step(actions)


def test_deferred_finite_check_reports_within_the_interval():
    env = PendulumTorch(num_envs=2, finite_check_interval=3)
    env.reset(seed=0)
    env.step(torch.zeros(2, 1))
    env.step(torch.tensor([[0.0], [math.inf]]))
    with pytest.raises(ValueError, match="within the last 3 steps"):
        env.step(torch.zeros(2, 1))


def test_backend_selection_and_errors():
    assert isinstance(envs.make("Pendulum-v1"), envs.GymnasiumBatchedEnv)  # auto on CPU keeps gymnasium
    assert isinstance(envs.make("Pendulum-v1", backend="torch"), PendulumTorch)
    assert isinstance(envs.make("PointMass-v0"), PointMassTorch)  # torch-only id
    assert isinstance(envs.make("Pendulum-v1", backend="torch", g=9.81), PendulumTorch)
    with pytest.raises(ValueError, match="backend must be one of auto, gymnasium, torch, mjwarp"):
        envs.make("Pendulum-v1", backend="jax")
    with pytest.raises(ValueError, match="does not implement 'Hopper-v5'; it implements CandidateChoice-v0, "):
        envs.make("Hopper-v5", backend="torch")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['gravity'\]; it accepts \['g'"):
        envs.make("Pendulum-v1", backend="torch", gravity=9.81)
    with pytest.raises(ValueError, match="vectorization='async' applies to the gymnasium backend only"):
        envs.make("Pendulum-v1", num_envs=2, backend="torch", vectorization="async")
    with pytest.raises(ValueError, match="num_envs must be >= 1"):
        envs.make("Pendulum-v1", num_envs=0, backend="torch")
    with pytest.raises(ValueError, match="dtype must be"):
        envs.make("Pendulum-v1", backend="torch", dtype=torch.float16)


@pytest.mark.slow  # a learning run of minutes: the slow set, which CI runs after the default suite
def test_caql_learns_pendulum_on_the_torch_backend(tmp_path):
    # Same settings as tests/test_caql.py::test_caql_ga_learns_pendulum on the gymnasium backend, which
    # passes -700 (measured: about -200 at 6k steps). A random policy scores about -1200.
    from rlcore.algos.caql import CAQLConfig, train
    from rlcore.loops import EnvConfig

    result = train(CAQLConfig(env=EnvConfig(backend="torch"), total_steps=6000, eval_interval=3000, eval_episodes=5,
                              seed=3,
                              run_dir=str(tmp_path / "learn"), progress=False))
    assert result.final_return > -700, result.evaluations
    assert not math.isnan(result.final_return)


def test_training_on_the_torch_backend_resumes_bit_for_bit(tmp_path):
    # The shared loop checkpoints env.state_dict() (state, step counters, generator); resuming half way
    # must end where the uninterrupted run ends.
    from rlcore.algos.caql import CAQLConfig, train
    from rlcore.loops import EnvConfig

    small = dict(env=EnvConfig("Pendulum-v1", backend="torch"), num_envs=2, total_steps=600, learning_starts=200,
                 eval_interval=300, eval_episodes=2, checkpoint_interval=300, log_interval=300, progress=False)
    full = train(CAQLConfig(**small, run_dir=str(tmp_path / "full")))
    train(CAQLConfig(**{**small, "total_steps": 300}, run_dir=str(tmp_path / "resumed")))
    resumed = train(CAQLConfig(**small, resume=str(tmp_path / "resumed")))
    for (key, a), (_, b) in zip(full.agent.q.state_dict().items(), resumed.agent.q.state_dict().items(),
                                strict=True):
        assert torch.equal(a, b), f"q.{key} differs after resume"
    assert full.evaluations[-1]["returns"] == resumed.evaluations[-1]["returns"]
