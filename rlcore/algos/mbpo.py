"""MBPO: model-based policy optimisation (Janner, Fu, Zhang, Levine, NeurIPS 2019, "When to Trust Your Model",
arXiv 1906.08253): SAC trained mostly on short model rollouts branched from real states.

Per update, on a real replay batch ``(s, a, r, s', d)`` of the shared off-policy loop:

1. *Model.* The probabilistic ensemble (:class:`rlcore.models.OnlineDynamics`: ``E`` Gaussian MLPs predicting
   ``[s' - s, r]``, elites by holdout error) takes a gradient step on the batch's training rows every
   ``model_train_every`` updates, and re-ranks its members every ``elite_interval`` updates;
2. *Branched rollouts.* From the first ``rollouts_per_update`` real states of the batch, ``k`` model steps with
   the current SAC policy (each step from a uniformly chosen elite, MBPO's "TS1"), into a FIFO model buffer.
   ``k`` follows MBPO's schedule ``(start_epoch, end_epoch, min_k, max_k)``: ``min_k`` until ``start_epoch``,
   then linear in the epoch (``epoch = env step // epoch_length``) up to ``max_k`` at ``end_epoch``. A rollout
   ends where the termination function says so (the task's known one, MBPO's "static fns", or a learned
   classifier: ``termination``); the transition into the terminal state is stored with ``d = 1``, and the
   row branches again from a real state;
3. *SAC on the mix.* One :class:`~rlcore.algos.sac.SACAgent` update (the same object and update as ``rlcore
   train sac``, not a copy) on ``real_ratio`` real transitions plus model transitions
   (:func:`rlcore.models.mixed_batch`).

Defaults follow MBPO's configs (``jannerm/mbpo/examples/config``, read for ``shared/specs/caql-vmbpo.md``):
7 members, 5 elites, (200,)x4 members, real_ratio 0.05, tau 5e-3, the per-task rollout schedules below.
Deliberate deviations:

* **Online model training.** MBPO retrains the ensemble on the whole replay buffer to convergence every 250
  steps; the shared loop hands agents replay batches, so here it follows the data by SGD on the same batches
  (see :mod:`rlcore.models.online`), after ``model_warmup_updates`` steps before the first rollout.
* **Rollouts per update, not per 250 steps.** MBPO branches 100k rollouts every 250 environment steps (400 per
  step) and keeps one epoch of them; here ``rollouts_per_update`` per update into a FIFO buffer of
  ``model_buffer_size``, the same kind of data, generated as the policy changes.
* **Updates per step.** MBPO takes 20 SAC updates per environment step (HalfCheetah 40). The default here is
  the shared loop's 1, so that MBPO costs about as much per step as VMBPO's model-based E-step and can be
  compared with SAC on a CPU; pass ``updates_per_step=20`` for the paper's ratio.

==========================  ======================  =============
task (gymnasium v5)         rollout_schedule        epoch_length
==========================  ======================  =============
Hopper                      (20, 150, 1, 15)        1000
Walker2d, HalfCheetah       (20, 150, 1, 1)         1000
Ant                         (20, 100, 1, 25)        1000
Humanoid                    (20, 300, 1, 20)        1000
InvertedPendulum,           (1, 15, 1, 1)           250
InvertedDoublePendulum
any other task              (20, 100, 1, 1)         1000
==========================  ======================  =============
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

import solvers
from rlcore.algos.sac import SACAgent, SACConfig
from rlcore.envs.base import BatchedEnv
from rlcore.envs.spaces import require_continuous_actions, require_flat_observations
from rlcore.loops import EnvSource, ReplayBuffer, TrainResult, TransitionBatch, train_off_policy
from rlcore.models import ModelEnv, ModelSettings, OnlineDynamics, collect_rollouts, mixed_batch, rollout_horizon
from rlcore.models.rollouts import check_schedule

Schedule = tuple[int, int, int, int]

MBPO_SCHEDULES: dict[str, tuple[Schedule, int]] = {
    "Hopper": ((20, 150, 1, 15), 1000),
    "Walker2d": ((20, 150, 1, 1), 1000),
    "HalfCheetah": ((20, 150, 1, 1), 1000),
    "Ant": ((20, 100, 1, 25), 1000),
    "Humanoid": ((20, 300, 1, 20), 1000),
    "InvertedPendulum": ((1, 15, 1, 1), 250),
    "InvertedDoublePendulum": ((1, 15, 1, 1), 250),
}
"""MBPO's ``rollout_schedule`` (in epochs) and epoch length per task (matched by name without version)."""
DEFAULT_SCHEDULE: tuple[Schedule, int] = ((20, 100, 1, 1), 1000)


def mbpo_schedule(env_id: str) -> tuple[Schedule, int]:
    """MBPO's rollout schedule and epoch length for ``env_id`` (:data:`DEFAULT_SCHEDULE` for unknown tasks)."""
    return MBPO_SCHEDULES.get(env_id.split("-v")[0].split("/")[-1], DEFAULT_SCHEDULE)


@dataclass
class MBPOConfig(ModelSettings, SACConfig):
    """MBPO settings: SAC's (`SACConfig`), the dynamics model's
    (`ModelSettings`) and the schedule of the rollout length."""

    rollout_schedule: tuple[int, int, int, int] | None = None
    """Rollout length k: (start_epoch, end_epoch, min_k, max_k), linear in the epoch; None: MBPO's for the task."""
    epoch_length: int | None = None
    """Environment steps per epoch of the schedule; None: MBPO's for the task (250 or 1000)."""
    real_ratio: float = 0.05
    """Share of real transitions in each SAC batch once model transitions exist (MBPO: 0.05)."""
    rollouts_per_update: int = 128
    """Real states of each update's batch from which model rollouts branch."""
    def validate(self) -> None:
        super().validate()
        self.validate_model(self.batch_size)
        if self.rollout_schedule is not None:
            check_schedule(self.rollout_schedule)
        if self.epoch_length is not None and self.epoch_length < 1:
            raise ValueError(f"epoch_length must be >= 1, got {self.epoch_length}.")


class MBPOAgent:
    """A SAC agent, the online dynamics ensemble, the model buffer and the branched rollouts."""

    acting_state_keys = ("sac",)
    """The parts of :meth:`state_dict` that acting reads (what a distributed learner sends its rollout actors)."""

    def __init__(self, config: MBPOConfig, obs_dim: int, action_set: solvers.ActionSet,
                 device: str | torch.device = "cpu", env_id: str | None = None) -> None:
        """``env_id`` picks the known termination function and MBPO's schedule (default: ``config.env.id``)."""
        c = self.config = config
        self.device = torch.device(device)
        env_id = env_id or c.env.id
        self.sac = SACAgent(c, obs_dim, action_set, self.device)
        self.action_set = self.sac.action_set
        self.dynamics = OnlineDynamics(c, obs_dim, action_set.dim, env_id, c.seed + 4, self.device)
        self.model_buffer = ReplayBuffer(c.model_buffer_size, self.device, seed=c.seed + 6)
        schedule, epoch_length = mbpo_schedule(env_id)
        self.rollout_schedule = c.rollout_schedule or schedule
        self.epoch_length = c.epoch_length or epoch_length
        self.updates = 0
        self.env_step = 0

    @torch.no_grad()
    def act(self, obs: torch.Tensor, step: int = 0, deterministic: bool = False) -> torch.Tensor:
        if not deterministic:
            self.env_step = step  # the rollout schedule's clock
        return self.sac.act(obs, step, deterministic)

    def rollout_length(self) -> int:
        """``k`` of the schedule at the current environment step."""
        return rollout_horizon(self.env_step // self.epoch_length, self.rollout_schedule)

    def rollout(self, start_obs: torch.Tensor) -> TransitionBatch:
        """Branch ``k``-step rollouts of the SAC policy from ``start_obs``; store and return their transitions."""
        k = self.rollout_length()
        d = self.dynamics
        env = ModelEnv(d.model, self.action_set, d.termination, k, d.generator)
        transitions = collect_rollouts(env, lambda obs: self.sac.actor.sample(obs, d.generator)[0], start_obs, k)
        self.model_buffer.add(transitions.obs, transitions.actions, transitions.rewards, transitions.next_obs,
                              transitions.terminated)
        return transitions

    def update(self, real: TransitionBatch) -> dict[str, torch.Tensor]:
        c = self.config
        self.updates += 1
        metrics = self.dynamics.step(real, self.updates)
        if self.dynamics.ready:
            imagined = self.rollout(real.obs[: c.rollouts_per_update])
            metrics.update(rollout_length=torch.tensor(float(self.rollout_length())),
                           model_reward=imagined.rewards.mean(), model_terminal_share=imagined.terminated.mean())
        metrics.update(self.sac.update(mixed_batch(real, self.model_buffer, c.real_ratio)))
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {"sac": self.sac.state_dict(), "dynamics": self.dynamics.state_dict(),
                "model_buffer": self.model_buffer.state_dict(), "updates": self.updates, "env_step": self.env_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = [k for k in ("sac", "dynamics", "model_buffer", "updates", "env_step") if k not in state]
        if missing:
            raise ValueError(f"MBPO agent state is missing {', '.join(missing)}.")
        self.sac.load_state_dict(state["sac"])
        self.dynamics.load_state_dict(state["dynamics"])
        self.model_buffer.load_state_dict(state["model_buffer"])
        self.updates, self.env_step = state["updates"], state["env_step"]


def make_agent(config: MBPOConfig, env: BatchedEnv) -> MBPOAgent:
    """The untrained MBPOAgent for ``env`` (a ValueError if MBPO cannot use its spaces)."""
    require_continuous_actions(env, "mbpo")
    require_flat_observations(env, "mbpo")
    return MBPOAgent(config, env.obs_dim, env.action_set, config.device, env_id=getattr(env, "env_id", None))


def train(config: MBPOConfig | None = None, env: EnvSource | None = None,
          eval_env: EnvSource | None = None) -> TrainResult:
    """Train MBPO; returns the agent, its run directory and the evaluation history.

    ``env`` / ``eval_env``: environments or factories ``seed -> BatchedEnv`` instead of ``config.env``."""
    return train_off_policy("mbpo", config or MBPOConfig(), make_agent, env, eval_env)
