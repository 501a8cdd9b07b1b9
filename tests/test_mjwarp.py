"""The MuJoCo Warp backend against gymnasium v5 (on warp's CPU device), and its BatchedEnv contract.

Tolerance: MuJoCo Warp integrates in float32 with its own constraint solver, MuJoCo in float64, so
from the same qpos/qvel and actions the observations and rewards agree to ``ATOL + RTOL |x|`` with
ATOL = RTOL = 1e-3 over the horizons below (measured on this CPU: at most about 1e-4 in
observations and 1e-5 in rewards), and the termination flags agree exactly. The other five tasks
are checked the same way in the ``slow`` job (about a minute of kernel compilation each, cold).
"""

import gymnasium as gym
import mujoco
import numpy as np
import pytest
import torch

from rlcore import envs
from rlcore.envs import mjwarp

ATOL = RTOL = 1e-3
needs_warp = pytest.mark.skipif(not mjwarp.mujoco_warp_available(),
                                reason="mujoco-warp / warp-lang not installed (extra 'gpu')")


def _agreement(env_id: str, horizon: int, action_scale: float, num_envs: int = 4, seed: int = 0,
               opt_overrides: dict | None = None, atol: float = ATOL) -> int:
    """Step MuJoCo Warp and gymnasium from the same states; compare each row until it ends. Returns #ends."""
    env = envs.make(env_id, num_envs=num_envs, backend="mjwarp", opt_overrides=opt_overrides)
    obs, _ = env.reset(seed=seed)
    references = []
    for i in range(num_envs):
        reference = gym.make(env_id)
        reference.reset(seed=i)
        if env.spec.newton_solver:  # the model's PGS is not in MuJoCo Warp: both sides use Newton (see mjwarp)
            reference.unwrapped.model.opt.solver = mujoco.mjtSolver.mjSOL_NEWTON
        for name, value in (opt_overrides or {}).items():
            setattr(reference.unwrapped.model.opt, name, value)
        reference.unwrapped.set_state(env.qpos[i].double().numpy(), env.qvel[i].double().numpy())
        np.testing.assert_allclose(obs[i].numpy(), reference.unwrapped._get_obs(), rtol=RTOL, atol=ATOL)
        references.append(reference)
    generator = torch.Generator().manual_seed(seed)
    running = np.ones(num_envs, dtype=bool)
    ends = 0
    for _ in range(horizon):
        actions = env.action_set.sample(num_envs, generator) * action_scale
        _, reward, terminated, truncated, info = env.step(actions)
        for i in np.flatnonzero(running):
            ref_obs, ref_reward, ref_terminated, _, _ = references[i].step(actions[i].double().numpy())
            np.testing.assert_allclose(info["final_obs"][i].numpy(), ref_obs, rtol=RTOL, atol=atol,
                                       err_msg=f"{env_id} row {i}")
            assert reward[i].item() == pytest.approx(ref_reward, rel=RTOL, abs=atol), f"{env_id} row {i}"
            assert bool(terminated[i]) == ref_terminated, f"{env_id} row {i}"
            if ref_terminated:
                running[i] = False  # gymnasium would need a reset; the batched env already started anew
                ends += 1
        assert not truncated.any()
    return ends


@needs_warp
def test_hopper_agrees_with_gymnasium_through_termination():
    # Full-range random actions make Hopper fall within the horizon: the terminal step is compared too.
    assert _agreement("Hopper-v5", horizon=25, action_scale=1.0) >= 1


@needs_warp
def test_inverted_pendulum_agrees_with_gymnasium():
    assert _agreement("InvertedPendulum-v5", horizon=15, action_scale=1.0) >= 1


@needs_warp
@pytest.mark.slow
@pytest.mark.parametrize(("env_id", "horizon"), [("HalfCheetah-v5", 8), ("Walker2d-v5", 8),
                                               ("InvertedDoublePendulum-v5", 8), ("Humanoid-v5", 8),
                                               ("Ant-v5", 2)])
def test_other_tasks_agree_with_gymnasium(env_id, horizon):
    # Ant only until its feet first touch the ground (step 3 or 4): with frictional contacts MuJoCo Warp
    # and MuJoCo part by about 1e-2 in qvel at the first impact (see the mjwarp module docstring).
    _agreement(env_id, horizon=horizon, action_scale=0.3, num_envs=2)


@needs_warp
@pytest.mark.slow
def test_ant_agrees_through_contacts_with_the_elliptic_cone():
    # The same Ant with the elliptic friction cone on both sides: observations (contact forces
    # included), rewards (contact cost included) and flags agree through the first foot contacts.
    # Measured: qpos/qvel within about 5e-4, the clipped contact forces within 4e-3 at the first impact.
    _agreement("Ant-v5", horizon=10, action_scale=0.3, num_envs=2,
               opt_overrides={"cone": mujoco.mjtCone.mjCONE_ELLIPTIC}, atol=1e-2)


@needs_warp
def test_auto_reset_final_obs_and_truncation():
    env = envs.make("Hopper-v5", num_envs=4, seed=0, backend="mjwarp", max_episode_steps=40)
    generator = torch.Generator().manual_seed(1)
    init_qpos = torch.as_tensor(env.mj_model.qpos0, dtype=torch.float32)
    ever_terminated = torch.zeros(4, dtype=torch.bool)
    for t in range(1, 41):
        obs, _, terminated, truncated, info = env.step(env.action_set.sample(4, generator))
        done = terminated | truncated
        torch.testing.assert_close(info["final_obs"][~done], obs[~done])
        if done.any():
            # Ended rows already show the next episode's first observation: qpos near the initial pose.
            assert (obs[done, :5] - init_qpos[1:]).abs().max() <= 5e-3 + 1e-6
            assert not torch.equal(obs[done], info["final_obs"][done])
        if t < 40:
            assert not truncated.any()
        ever_terminated |= terminated
    assert ever_terminated.any(), "random actions should make Hopper fall within 40 steps"
    # Rows that never fell hit the time limit at step 40; the others restarted their step counter.
    assert truncated[~ever_terminated].all()


@needs_warp
def test_truncation_at_the_time_limit():
    env = envs.make("InvertedPendulum-v5", num_envs=3, seed=0, backend="mjwarp", max_episode_steps=5)
    flags = [env.step(torch.zeros(3, 1))[2:4] for _ in range(5)]
    assert not any(t.any() for t, _ in flags)
    assert [bool(u.all()) for _, u in flags] == [False] * 4 + [True]


@needs_warp
def test_state_dict_resumes_exactly():
    env = envs.make("InvertedPendulum-v5", num_envs=3, seed=0, backend="mjwarp", max_episode_steps=6)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        env.step(env.action_set.sample(3, generator) * 0.2)
    state = env.state_dict()
    actions = [env.action_set.sample(3, generator) * 0.2 for _ in range(8)]  # crosses a truncation
    first = [env.step(a)[:4] for a in actions]
    env.load_state_dict(state)
    second = [env.step(a)[:4] for a in actions]
    for one, two in zip(first, second, strict=True):
        for x, y in zip(one, two, strict=True):
            assert torch.equal(x, y)


@needs_warp
def test_contract_shapes_and_action_projection():
    env = envs.make("Hopper-v5", num_envs=2, seed=0, backend="mjwarp", action_bound=0.25)
    assert isinstance(env, envs.BatchedEnv) and env.obs_dim == 11 and env.action_dim == 3
    obs, reward, terminated, truncated, info = env.step(torch.ones(2, 3))
    assert obs.shape == (2, 11) and obs.dtype == torch.float32 and reward.shape == (2,)
    assert terminated.dtype == truncated.dtype == torch.bool
    assert info["applied_actions"].tolist() == [[0.25] * 3] * 2
    with pytest.raises(ValueError, match=r"NaN or infinite values \(rows \[1\]\)"):
        env.step(torch.tensor([[0.0, 0.0, 0.0], [0.0, float("nan"), 0.0]]))


def test_unsupported_ids_and_options_raise():
    with pytest.raises(ValueError, match="does not implement 'Swimmer-v5'; it implements Ant-v5, HalfCheetah-v5"):
        envs.make("Swimmer-v5", backend="mjwarp")
    with pytest.raises(ValueError, match="does not implement 'Pendulum-v1'"):
        envs.make("Pendulum-v1", backend="mjwarp")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['frame_skip'\]"):
        envs.make("Hopper-v5", backend="mjwarp", frame_skip=2)


def test_missing_extra_names_it(monkeypatch):
    monkeypatch.setattr(mjwarp, "mujoco_warp_available", lambda: False)
    with pytest.raises(ValueError, match=r"pip install 'rlcore\[gpu\]'"):
        envs.make("Hopper-v5", backend="mjwarp")
    # "auto" never picks a backend that is not installed.
    assert envs._pick_backend("Hopper-v5", torch.device("cuda"), "auto") == "gymnasium"


def test_auto_backend_choice():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert envs._pick_backend("Hopper-v5", cpu, "auto") == "gymnasium"
    assert envs._pick_backend("Pendulum-v1", cpu, "auto") == "gymnasium"
    assert envs._pick_backend("PointMass-v0", cpu, "auto") == "torch"
    assert envs._pick_backend("Pendulum-v1", cuda, "auto") == "torch"
    expected = "mjwarp" if mjwarp.mujoco_warp_available() else "gymnasium"
    assert envs._pick_backend("Humanoid-v5", cuda, "auto") == expected
    assert envs._pick_backend("Swimmer-v5", cuda, "auto") == "gymnasium"
