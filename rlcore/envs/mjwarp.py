"""gymnasium's v5 MuJoCo tasks on MuJoCo Warp: thousands of worlds stepped together, torch in and out.

Install with the ``gpu`` extra (``pip install rlcore[gpu]``: ``mujoco-warp`` and ``warp-lang``). Warp
runs on CUDA GPUs and on the CPU (the tests run there; the CPU path is correct but slow: use the
gymnasium backend for CPU training).

Each task loads gymnasium's own model file (``gymnasium/envs/mujoco/assets``), and computes its
observation, reward, termination and reset distribution in batch exactly as gymnasium's
``*_v5.py`` defines them (default arguments), from zero-copy torch views of the warp arrays
(``warp.to_torch``). Two details of gymnasium's MuJoCo loop are reproduced on purpose:

* after ``mj_step`` the position-dependent quantities (``xpos``, ``cinert``, ``site_xpos``...) still
  describe the state *before* the last substep, and gymnasium's observations and centre-of-mass
  velocities use them as they are; so do these tasks;
* a reset calls ``mj_resetData`` and ``mj_forward`` only, so ``cfrc_ext`` is zero in the first
  observation of an episode (Ant, Humanoid).

The same-step auto-reset writes fresh ``qpos``/``qvel`` into the ended worlds with ``torch.where``
(no Python loop over worlds, no host sync); tasks whose observation needs derived quantities run one
``forward`` over all worlds after it (re-computing the same derived quantities in worlds that did
not end is harmless: the next ``step`` starts with ``forward`` anyway and the warm start is kept).

MuJoCo Warp computes in float32 and its constraint solver differs in detail from MuJoCo's float64
one, so trajectories agree with gymnasium's to a tolerance that grows with the horizon and with
contacts (``tests/test_mjwarp.py`` states the tolerances it checks). Known differences:

* Humanoid-v5's model file selects the PGS solver, which MuJoCo Warp does not implement: this backend
  uses Newton (MuJoCo's default) for it, a different (equally valid) solution of the same contact
  problem, so Humanoid trajectories match gymnasium's only with the same override on the gymnasium side;
* with frictional contacts under MuJoCo's default pyramidal friction cone (Ant-v5, ``condim=3``) the
  first foot contact already puts ``qvel`` about 1e-2 apart from MuJoCo's, so Ant agrees step by step
  only until its feet touch the ground; with the elliptic cone on both sides (``opt_overrides``) the
  two agree through the same contacts (qpos/qvel to about 1e-4, contact forces to 4e-3, measured),
  so the difference lies in MuJoCo Warp's pyramidal cone. Hopper, Walker2d, HalfCheetah and the
  pendulums (frictionless or no contacts) agree to about 1e-5 through contacts and falls.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlcore.envs.torch_envs import TensorBatchedEnv
from solvers import ActionSet

_INSTALL_HINT = ("the mjwarp backend needs MuJoCo Warp: install the extra with `pip install 'rlcore[gpu]'` "
                 "(packages mujoco-warp and warp-lang).")


def mujoco_warp_available() -> bool:
    """Whether ``mujoco_warp`` and ``warp`` can be imported (without importing them)."""
    return all(importlib.util.find_spec(name) is not None for name in ("mujoco_warp", "warp"))


@dataclass(frozen=True)
class TaskSpec:
    """What differs between the v5 tasks: model file, frame skip, reset noise, obs/reward/termination."""

    xml: str
    frame_skip: int
    reset_noise: float
    qvel_noise: str
    """``"uniform"`` (U(-s, s)) or ``"normal"`` (s N(0, 1)), as in the task's ``reset_model``."""
    needs_forward_on_reset: bool = False
    """The observation uses derived quantities, so a reset must run ``forward``."""
    needs_rne_post: bool = False
    """gymnasium's loop calls ``mj_rnePostConstraint`` after each step; the task reads ``cfrc_ext``."""
    newton_solver: bool = False
    """The model file asks for a constraint solver MuJoCo Warp lacks (PGS); use Newton, MuJoCo's default."""
    options: dict[str, Any] = field(default_factory=dict)


MJWARP_ENVS: dict[str, TaskSpec] = {
    "Hopper-v5": TaskSpec("hopper.xml", 4, 5e-3, "uniform"),
    "Walker2d-v5": TaskSpec("walker2d_v5.xml", 4, 5e-3, "uniform"),
    "HalfCheetah-v5": TaskSpec("half_cheetah.xml", 5, 0.1, "normal"),
    "InvertedPendulum-v5": TaskSpec("inverted_pendulum.xml", 2, 0.01, "uniform"),
    "InvertedDoublePendulum-v5": TaskSpec("inverted_double_pendulum.xml", 5, 0.1, "normal",
                                          needs_forward_on_reset=True),
    "Ant-v5": TaskSpec("ant.xml", 5, 0.1, "normal", needs_forward_on_reset=True, needs_rne_post=True),
    "Humanoid-v5": TaskSpec("humanoid.xml", 5, 1e-2, "uniform", needs_forward_on_reset=True, needs_rne_post=True,
                            newton_solver=True),
}
"""The gymnasium ids the mjwarp backend implements."""


class MjWarpBatchedEnv(TensorBatchedEnv):
    """``num_envs`` worlds of one gymnasium v5 MuJoCo task on MuJoCo Warp, behind the BatchedEnv contract.

    Args:
        env_id: one of :data:`MJWARP_ENVS`.
        num_envs: number of worlds.
        device: ``"cpu"`` or a CUDA device; warp runs the simulation there and torch shares its memory.
        action_set: feasible actions (defaults to the actuators' control range).
        max_episode_steps: time limit (gymnasium's registration: 1000).
        nconmax: contacts allocated per world (None: MuJoCo Warp's default).
        njmax: constraint rows allocated per world (None: MuJoCo Warp's default).
        cuda_graph: on CUDA, capture the ``frame_skip`` physics steps once and replay them as a graph.
        opt_overrides: fields of the model's ``opt`` to change before it goes to the device, e.g.
            ``{"cone": mujoco.mjtCone.mjCONE_ELLIPTIC}`` (the tests use it to compare Ant through contacts).
        finite_check_interval: see :class:`~rlcore.envs.torch_envs.TensorBatchedEnv`.
    """

    def __init__(self, env_id: str, num_envs: int = 1, device: str | torch.device = "cpu",
                 action_set: ActionSet | None = None, max_episode_steps: int = 1000, nconmax: int | None = None,
                 njmax: int | None = None, cuda_graph: bool = True, opt_overrides: dict[str, Any] | None = None,
                 finite_check_interval: int | None = None) -> None:
        if env_id not in MJWARP_ENVS:
            raise ValueError(f"the mjwarp backend does not implement {env_id!r}; it implements "
                             f"{', '.join(sorted(MJWARP_ENVS))}. Use backend='gymnasium' for other ids.")
        if not mujoco_warp_available():
            raise ValueError(_INSTALL_HINT)
        import mujoco
        import mujoco_warp as mjw
        import warp as wp

        self.env_id = env_id
        self.spec = MJWARP_ENVS[env_id]
        self.max_episode_steps = int(max_episode_steps)
        self._mjw, self._wp = mjw, wp
        # Warp prints a line per compiled or loaded module otherwise (hundreds for one model).
        wp.config.quiet = True
        if hasattr(wp, "LOG_WARNING"):
            wp.config.log_level = max(wp.config.log_level, wp.LOG_WARNING)
        wp.init()

        path = os.path.join(os.path.dirname(gym.__file__), "envs", "mujoco", "assets", self.spec.xml)
        self.mj_model = mujoco.MjModel.from_xml_path(path)
        if self.spec.newton_solver:
            self.mj_model.opt.solver = mujoco.mjtSolver.mjSOL_NEWTON
        for name, value in (opt_overrides or {}).items():
            if not hasattr(self.mj_model.opt, name):
                raise ValueError(f"opt_overrides: MuJoCo's opt has no field {name!r}.")
            setattr(self.mj_model.opt, name, value)
        mj_data = mujoco.MjData(self.mj_model)
        self.dt = float(self.mj_model.opt.timestep) * self.spec.frame_skip
        ctrl_range = self.mj_model.actuator_ctrlrange.astype(np.float32)
        self._setup(num_envs, device, action_set, ctrl_range[:, 0], ctrl_range[:, 1],
                    self._obs_size(), finite_check_interval)

        if self.device.type == "cuda" and self.device.index is None:  # warp needs the ordinal
            self.device = torch.device("cuda", torch.cuda.current_device())
        self._wp_device = wp.device_from_torch(self.device)
        with wp.ScopedDevice(self._wp_device):
            self._m = mjw.put_model(self.mj_model)
            self._d = mjw.put_data(self.mj_model, mj_data, nworld=self.num_envs, nconmax=nconmax, njmax=njmax)
        # Zero-copy torch views of the warp arrays: writing into them writes the simulator state.
        view = wp.to_torch
        d = self._d
        self.qpos, self.qvel, self.ctrl = view(d.qpos), view(d.qvel), view(d.ctrl)
        self._qacc_warmstart, self._time = view(d.qacc_warmstart), view(d.time)
        self._act = view(d.act) if self.mj_model.na else None
        self._init_qpos = torch.as_tensor(mj_data.qpos, dtype=torch.float32, device=self.device)
        self._init_qvel = torch.as_tensor(mj_data.qvel, dtype=torch.float32, device=self.device)
        self._body_mass = torch.as_tensor(self.mj_model.body_mass, dtype=torch.float32, device=self.device)
        self._before = torch.zeros(self.num_envs, 2, device=self.device)
        self._fresh_rows: torch.Tensor | None = None
        """Rows reset in the last step (their cfrc_ext reads as zero, as after gymnasium's reset)."""
        self._graph = None
        self._use_graph = bool(cuda_graph) and self._wp_device.is_cuda

    # ------------------------------------------------------------------ physics
    # On CUDA every warp launch goes to torch's current stream, so warp kernels and torch operations
    # are ordered by the stream itself: no host synchronisation between them. The optional CUDA graph
    # is captured on warp's own stream (CUDA cannot capture the legacy default stream torch uses) and
    # replayed on torch's. (Written for CUDA, exercised here on the CPU only: see the report of issue 7.)
    def _launch_scope(self) -> contextlib.AbstractContextManager:
        if not self._wp_device.is_cuda:
            return self._wp.ScopedDevice(self._wp_device)
        stream = self._wp.stream_from_torch(torch.cuda.current_stream(self.device))
        return self._wp.ScopedStream(stream, sync_enter=False)

    def _physics(self) -> None:
        """``frame_skip`` MuJoCo steps, then ``rne_postconstraint`` where gymnasium's loop has it."""
        if self._use_graph:
            if self._graph is None:
                torch.cuda.synchronize(self.device)  # capture from a quiet device
                with self._wp.ScopedCapture(device=self._wp_device) as capture:
                    self._physics_launches()
                self._graph = capture.graph
            self._wp.capture_launch(self._graph, stream=self._wp.stream_from_torch(
                torch.cuda.current_stream(self.device)))
        else:
            with self._launch_scope():
                self._physics_launches()

    def _physics_launches(self) -> None:
        for _ in range(self.spec.frame_skip):
            self._mjw.step(self._m, self._d)
        if self.spec.needs_rne_post:
            self._mjw.rne_postconstraint(self._m, self._d)

    def _forward(self) -> None:
        with self._launch_scope():
            self._mjw.forward(self._m, self._d)

    # ------------------------------------------------------------------ contract
    def _reset_all(self) -> None:
        qpos, qvel = self._initial_state(self.num_envs)
        self.qpos.copy_(qpos)
        self.qvel.copy_(qvel)
        self._qacc_warmstart.zero_()
        self._time.zero_()
        self.ctrl.zero_()
        if self._act is not None:
            self._act.zero_()
        self._forward()
        self._before = self._position_before()
        self._fresh_rows = torch.ones(self.num_envs, dtype=torch.bool, device=self.device)

    def _initial_state(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        s, g = self.spec.reset_noise, self.generator
        nq, nv = self._init_qpos.shape[0], self._init_qvel.shape[0]
        qpos = self._init_qpos + (torch.rand(n, nq, generator=g, device=self.device) * 2 - 1) * s
        if self.spec.qvel_noise == "normal":
            noise = torch.randn(n, nv, generator=g, device=self.device) * s
        else:
            noise = (torch.rand(n, nv, generator=g, device=self.device) * 2 - 1) * s
        return qpos, self._init_qvel + noise

    def _transition(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self._fresh_rows = None
        self.ctrl.copy_(actions)
        before = self._before if self.spec.needs_forward_on_reset else self.qpos[:, :2].clone()
        self._physics()
        reward, terminated = self._reward_and_termination(actions, before)
        return self.qpos, reward, terminated

    def _auto_reset(self, next_state: torch.Tensor, done: torch.Tensor) -> None:
        qpos, qvel = self._initial_state(self.num_envs)
        rows = done[:, None]
        self.qpos.copy_(torch.where(rows, qpos, self.qpos))
        self.qvel.copy_(torch.where(rows, qvel, self.qvel))
        self._qacc_warmstart.masked_fill_(rows, 0.0)
        self._time.masked_fill_(done, 0.0)
        self.ctrl.masked_fill_(rows, 0.0)  # mj_resetData zeroes ctrl; Humanoid observes the actuator forces
        if self._act is not None:
            self._act.masked_fill_(rows, 0.0)
        if self.spec.needs_forward_on_reset:
            stale = self._position_before()
            self._forward()
            self._before = torch.where(rows, self._position_before(), stale)
            self._fresh_rows = done

    def _observe(self, state: torch.Tensor) -> torch.Tensor:
        # ``state`` is the qpos view; the observation reads every quantity it needs from the views.
        return self._observation().float()

    def _current_obs(self) -> torch.Tensor:
        return self._observation(zero_contacts=self._fresh_rows).float()

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        return {"qpos": self.qpos.clone(), "qvel": self.qvel.clone(), "qacc_warmstart": self._qacc_warmstart.clone(),
                "before": self._before.clone()}

    def _load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        for name, target in (("qpos", self.qpos), ("qvel", self.qvel), ("qacc_warmstart", self._qacc_warmstart)):
            if tensors[name].shape != target.shape:
                raise ValueError(f"{name} has shape {list(tensors[name].shape)}, expected {list(target.shape)}.")
            target.copy_(tensors[name])
        self._forward()
        self._before = tensors["before"].clone()

    def set_state(self, qpos: torch.Tensor, qvel: torch.Tensor | None = None) -> None:  # type: ignore[override]
        """Set ``qpos[N, nq]`` and ``qvel[N, nv]`` of every world, as gymnasium's ``set_state`` (with forward)."""
        self.qpos.copy_(torch.as_tensor(qpos, device=self.device))
        if qvel is not None:
            self.qvel.copy_(torch.as_tensor(qvel, device=self.device))
        self._qacc_warmstart.zero_()
        self._forward()
        self._before = self._position_before()

    def get_state(self) -> torch.Tensor:
        """A copy of ``[qpos, qvel]`` of every world, shape ``[N, nq + nv]``."""
        return torch.cat([self.qpos, self.qvel], dim=1).clone()

    # ------------------------------------------------------------------ task definitions (gymnasium v5)
    def _view(self, name: str) -> torch.Tensor:
        return self._wp.to_torch(getattr(self._d, name))

    def _position_before(self) -> torch.Tensor:
        """The planar position whose change is the forward velocity, read as gymnasium reads it."""
        if self.env_id == "Ant-v5":
            return self._view("xpos")[:, 1, :2].clone()  # main_body = 1 (the torso)
        if self.env_id == "Humanoid-v5":
            xipos = self._view("xipos")
            return (self._body_mass[None, :, None] * xipos).sum(1)[:, :2] / self._body_mass.sum()
        return self.qpos[:, :2].clone()

    def _obs_size(self) -> int:
        m = self.mj_model
        sizes = {"Hopper-v5": m.nq - 1 + m.nv, "Walker2d-v5": m.nq - 1 + m.nv, "HalfCheetah-v5": m.nq - 1 + m.nv,
                 "InvertedPendulum-v5": m.nq + m.nv, "InvertedDoublePendulum-v5": 9,
                 "Ant-v5": m.nq - 2 + m.nv + (m.nbody - 1) * 6,
                 "Humanoid-v5": m.nq - 2 + m.nv + (m.nbody - 1) * (10 + 6 + 6) + m.nv - 6}
        return sizes[self.env_id]

    def _observation(self, zero_contacts: torch.Tensor | None = None) -> torch.Tensor:
        qpos, qvel, env_id = self.qpos, self.qvel, self.env_id
        if env_id in ("Hopper-v5", "Walker2d-v5"):
            return torch.cat([qpos[:, 1:], qvel.clamp(-10, 10)], dim=1)
        if env_id == "HalfCheetah-v5":
            return torch.cat([qpos[:, 1:], qvel], dim=1)
        if env_id == "InvertedPendulum-v5":
            return torch.cat([qpos, qvel], dim=1)
        if env_id == "InvertedDoublePendulum-v5":
            constraint = self._view("qfrc_constraint")[:, :1].clamp(-10, 10)
            return torch.cat([qpos[:, :1], qpos[:, 1:].sin(), qpos[:, 1:].cos(), qvel.clamp(-10, 10), constraint], 1)
        cfrc_ext = self._contact_forces(zero_contacts)
        if env_id == "Ant-v5":
            return torch.cat([qpos[:, 2:], qvel, cfrc_ext[:, 1:].clamp(-1, 1).flatten(1)], dim=1)
        # Humanoid-v5
        cinert = self._view("cinert")[:, 1:].flatten(1)
        cvel = self._view("cvel")[:, 1:].flatten(1)
        actuator = self._view("qfrc_actuator")[:, 6:]
        return torch.cat([qpos[:, 2:], qvel, cinert, cvel, actuator, cfrc_ext[:, 1:].flatten(1)], dim=1)

    def _contact_forces(self, zero_rows: torch.Tensor | None) -> torch.Tensor:
        """``cfrc_ext[N, nbody, 6]``; zero on freshly reset rows (gymnasium's reset does not compute it)."""
        cfrc_ext = self._view("cfrc_ext")
        if zero_rows is None:
            return cfrc_ext
        return cfrc_ext.masked_fill(zero_rows[:, None, None], 0.0)

    def _reward_and_termination(self, actions: torch.Tensor, before: torch.Tensor
                                ) -> tuple[torch.Tensor, torch.Tensor]:
        qpos, qvel, env_id = self.qpos, self.qvel, self.env_id
        control = actions.pow(2).sum(dim=1)
        if env_id in ("Hopper-v5", "Walker2d-v5", "HalfCheetah-v5"):
            x_velocity = (qpos[:, 0] - before[:, 0]) / self.dt
            if env_id == "HalfCheetah-v5":
                return x_velocity - 0.1 * control, torch.zeros_like(x_velocity, dtype=torch.bool)
            z, angle = qpos[:, 1], qpos[:, 2]
            if env_id == "Hopper-v5":
                state = torch.cat([qpos, qvel], dim=1)[:, 2:]
                healthy = ((state > -100) & (state < 100)).all(dim=1) & (z > 0.7) & (angle > -0.2) & (angle < 0.2)
            else:
                healthy = (z > 0.8) & (z < 2.0) & (angle > -1.0) & (angle < 1.0)
            return x_velocity + healthy.float() - 1e-3 * control, ~healthy
        if env_id == "InvertedPendulum-v5":
            terminated = ~torch.isfinite(torch.cat([qpos, qvel], 1)).all(dim=1) | (qpos[:, 1].abs() > 0.2)
            return (~terminated).float(), terminated
        if env_id == "InvertedDoublePendulum-v5":
            site = self._view("site_xpos")[:, 0]
            x, y = site[:, 0], site[:, 2]
            terminated = y <= 1
            distance = 0.01 * x**2 + (y - 2) ** 2
            velocity = 1e-3 * qvel[:, 1] ** 2 + 5e-3 * qvel[:, 2] ** 2
            return 10.0 * (~terminated).float() - distance - velocity, terminated
        after = self._position_before()
        x_velocity = (after[:, 0] - before[:, 0]) / self.dt
        cfrc_ext = self._view("cfrc_ext")
        if env_id == "Ant-v5":
            state = torch.cat([qpos, qvel], dim=1)
            healthy = torch.isfinite(state).all(dim=1) & (qpos[:, 2] >= 0.2) & (qpos[:, 2] <= 1.0)
            contact = 5e-4 * cfrc_ext.clamp(-1, 1).pow(2).flatten(1).sum(1)
            return x_velocity + healthy.float() - 0.5 * control - contact, ~healthy
        # Humanoid-v5
        healthy = (qpos[:, 2] > 1.0) & (qpos[:, 2] < 2.0)
        contact = (5e-7 * cfrc_ext.pow(2).flatten(1).sum(1)).clamp(max=10.0)
        return 1.25 * x_velocity + 5.0 * healthy.float() - 0.1 * control - contact, ~healthy

    def __repr__(self) -> str:
        return (f"MjWarpBatchedEnv({self.env_id!r}, num_envs={self.num_envs}, device={self.device}, "
                f"action_set={self.action_set})")


def make_mjwarp_env(env_id: str, num_envs: int = 1, device: str | torch.device = "cpu",
                    action_set: ActionSet | None = None, **env_kwargs: Any) -> MjWarpBatchedEnv:
    """Build the MuJoCo Warp environment ``env_id`` (see :class:`MjWarpBatchedEnv` for the options)."""
    accepted = ("max_episode_steps", "nconmax", "njmax", "cuda_graph", "opt_overrides", "finite_check_interval")
    unknown = sorted(set(env_kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"{env_id} (mjwarp backend) got unknown option(s) {unknown}; it accepts {list(accepted)}.")
    return MjWarpBatchedEnv(env_id, num_envs, device, action_set, **env_kwargs)


__all__ = ["MJWARP_ENVS", "MjWarpBatchedEnv", "TaskSpec", "make_mjwarp_env", "mujoco_warp_available"]
