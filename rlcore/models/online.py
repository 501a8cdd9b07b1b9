"""A dynamics ensemble trained online on the shared loop's replay batches, and the real/model batch mix.

What the model-based agents (MBPO, VMBPO's model-based E-step) share, so that it is written once:

* :class:`ModelSettings`: the ensemble, its online training, the rollouts' size, the model buffer, the
  real/model ratio and the termination function (a mixin of their config dataclasses);
* :class:`OnlineDynamics`: a :class:`~rlcore.models.ProbabilisticEnsemble` that takes one gradient step on the
  training rows of a real replay batch every ``model_train_every`` agent updates, keeps the batch's held-out
  rows (a fixed, data-defined split, :func:`~rlcore.models.holdout_mask`) in a FIFO buffer and ranks its
  members on them every ``elite_interval`` updates; with its termination function (known, learned or none)
  and the generator of everything random in the model;
* :func:`mixed_batch`: ``real_ratio`` of the real batch plus model transitions (MBPO's mix).

**Online, not to convergence (a deviation from MBPO).** MBPO retrains its ensemble on the whole replay buffer
every 250 environment steps until the holdout error stops improving. The shared off-policy loop hands agents
replay batches, not the buffer, so here the model follows the data by one SGD step per ``model_train_every``
updates on the same batches the critics see; each member trains on its own bootstrap of the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from rlcore.loops.checks import require_at_least
from rlcore.loops.replay import ReplayBuffer, TransitionBatch
from rlcore.models.dynamics import ProbabilisticEnsemble, holdout_mask
from rlcore.models.termination import LearnedTermination, TerminationFn, termination_fn

TerminationChoice = Literal["auto", "known", "learned", "never"]


@dataclass
class ModelSettings:
    """The dynamics model of a model-based agent (a mixin of its config; checked by `validate_model`)."""

    ensemble_size: int = 7
    """Members of the probabilistic dynamics ensemble."""
    num_elites: int = 5
    """Members used for prediction, chosen by holdout error."""
    model_hidden_sizes: tuple[int, ...] = (200, 200, 200, 200)
    """Hidden layers of each ensemble member."""
    model_learning_rate: float = 1e-3
    """Adam learning rate of the ensemble (and of a learned termination classifier)."""
    model_train_every: int = 2
    """Agent updates between two gradient steps of the ensemble (on the real batch)."""
    model_warmup_updates: int = 500
    """Ensemble gradient steps before the first model rollout."""
    holdout_fraction: float = 0.2
    """Share of real transitions (a fixed split) never trained on and used to rank the members."""
    holdout_size: int = 5_000
    """Held-out transitions kept for elite selection (FIFO)."""
    elite_interval: int = 250
    """Agent updates between elite selections."""
    rollouts_per_update: int = 64
    """Real states of each update's batch from which model rollouts branch."""
    model_buffer_size: int = 100_000
    """Capacity of the buffer of model transitions (FIFO)."""
    real_ratio: float = 0.5
    """Share of real transitions in each training batch once model transitions exist."""
    termination: TerminationChoice = "auto"
    """Where model rollouts end: 'known' (MBPO's static fns), 'learned' (a classifier of s'), 'never', 'auto'."""

    def validate_model(self, batch_size: int) -> None:
        """Raise a ValueError naming the first bad model setting (``batch_size``: the agent's batch)."""
        if not 1 <= self.num_elites <= self.ensemble_size:
            raise ValueError(f"need 1 <= num_elites <= ensemble_size, got num_elites={self.num_elites}, "
                             f"ensemble_size={self.ensemble_size}.")
        if not 0 <= self.real_ratio <= 1:
            raise ValueError(f"real_ratio must be in [0, 1], got {self.real_ratio}.")
        if not 0 < self.holdout_fraction < 1:
            raise ValueError(f"holdout_fraction must be in (0, 1), got {self.holdout_fraction}.")
        require_at_least(self, 1, "model_train_every", "rollouts_per_update", "model_buffer_size", "holdout_size",
                         "elite_interval")
        if self.rollouts_per_update > batch_size:
            raise ValueError(f"rollouts_per_update ({self.rollouts_per_update}) cannot exceed batch_size "
                             f"({batch_size}): rollouts start from the real batch's states.")
        if self.termination not in ("auto", "known", "learned", "never"):
            raise ValueError(f"termination must be 'auto', 'known', 'learned' or 'never', got {self.termination!r}.")


class OnlineDynamics:
    """The ensemble, its optimiser, holdout buffer, elites, termination function and generator (module docstring).

    Args:
        settings: the model settings.
        obs_dim: the task's observation size.
        action_dim: the task's action size.
        env_id: picks the known termination function (``termination='known'`` or ``'auto'``).
        seed: seeds the model's generator (holdout key, bootstraps, model sampling) and the holdout buffer.
        device: where the model and its buffers live.
    """

    def __init__(self, settings: ModelSettings, obs_dim: int, action_dim: int, env_id: str, seed: int,
                 device: torch.device) -> None:
        s = self.settings = settings
        self.device = device
        self.model = ProbabilisticEnsemble(obs_dim, action_dim, s.ensemble_size, s.num_elites,
                                           s.model_hidden_sizes).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=s.model_learning_rate)
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.holdout_key = torch.randn(obs_dim + action_dim, generator=self.generator, device=device)
        self.holdout = ReplayBuffer(s.holdout_size, device, seed=seed + 1)
        self.updates = 0
        known = termination_fn(env_id)
        if s.termination == "known" and known is None:
            raise ValueError(f"termination='known' but rlcore has no termination function for {env_id!r}; use "
                             "'learned', 'never' or 'auto' (see rlcore.models.termination).")
        learn = s.termination == "learned" or (s.termination == "auto" and known is None)
        self.learned_termination = LearnedTermination(obs_dim).to(device) if learn else None
        if learn:
            self.termination_optimizer = torch.optim.Adam(self.learned_termination.parameters(),
                                                          lr=s.model_learning_rate)
        self.termination: TerminationFn | None = (self.learned_termination.done if learn
                                                  else None if s.termination == "never" else known)

    @property
    def ready(self) -> bool:
        """Whether the model has had its warm-up steps and rollouts may start."""
        return self.updates >= self.settings.model_warmup_updates

    def train_step(self, batch: TransitionBatch) -> dict[str, torch.Tensor]:
        """One ensemble step on the batch's training rows; its held-out rows go to the holdout buffer."""
        s = self.settings
        held = holdout_mask(batch.obs, batch.actions, s.holdout_fraction, self.holdout_key)
        train = (~held).nonzero().squeeze(1)
        hold = held.nonzero().squeeze(1)
        if hold.numel():
            self.holdout.add(batch.obs[hold], batch.actions[hold], batch.rewards[hold], batch.next_obs[hold],
                             batch.terminated[hold])
        if train.numel() < 2:
            return {}
        model = self.model
        model.update_normalizer(batch.obs[train], batch.actions[train], batch.next_obs[train], batch.rewards[train])
        # A bootstrap of the training rows per member keeps the members' errors apart.
        index = train[torch.randint(0, train.numel(), (s.ensemble_size, train.numel()), generator=self.generator,
                                    device=self.device)]
        loss, _ = model.loss(batch.obs[index], batch.actions[index], batch.next_obs[index], batch.rewards[index])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.updates += 1
        metrics = {"model_loss": loss.detach()}
        if self.learned_termination is not None:
            term_loss = self.learned_termination.loss(batch.next_obs[train], batch.terminated[train])
            self.termination_optimizer.zero_grad(set_to_none=True)
            term_loss.backward()
            self.termination_optimizer.step()
            metrics["termination_loss"] = term_loss.detach()
        return metrics

    def select_elites(self) -> dict[str, torch.Tensor]:
        """Rank the members on the holdout buffer and keep the best ``num_elites``."""
        n = len(self.holdout)
        if n == 0:
            return {}
        h = self.holdout
        mse = self.model.member_mse(h.obs[:n], h.actions[:n], h.next_obs[:n], h.rewards[:n])
        self.model.select_elites(mse)
        return {"model_holdout_mse": mse[self.model.elites].mean()}

    def step(self, real: TransitionBatch, update_index: int) -> dict[str, torch.Tensor]:
        """What one agent update ``update_index`` (counted from 1) does to the model: train, rank the members."""
        metrics: dict[str, torch.Tensor] = {}
        if update_index % self.settings.model_train_every == 0:
            metrics.update(self.train_step(real))
        if update_index % self.settings.elite_interval == 0:
            metrics.update(self.select_elites())
        return metrics

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "holdout": self.holdout.state_dict(), "generator": self.generator.get_state(),
                 "holdout_key": self.holdout_key.clone(), "updates": self.updates}
        if self.learned_termination is not None:
            state.update(learned_termination=self.learned_termination.state_dict(),
                         termination_optimizer=self.termination_optimizer.state_dict())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        needed = ["model", "optimizer", "holdout", "generator", "holdout_key", "updates"]
        if self.learned_termination is not None:
            needed += ["learned_termination", "termination_optimizer"]
        missing = [k for k in needed if k not in state]
        if missing:
            raise ValueError(f"dynamics state is missing {', '.join(missing)} (was it saved with another "
                             "termination setting?).")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.holdout.load_state_dict(state["holdout"])
        self.generator.set_state(state["generator"])
        self.holdout_key.copy_(state["holdout_key"])
        self.updates = state["updates"]
        if self.learned_termination is not None:
            self.learned_termination.load_state_dict(state["learned_termination"])
            self.termination_optimizer.load_state_dict(state["termination_optimizer"])


_FIELDS = ("obs", "actions", "rewards", "next_obs", "terminated")


def mixed_batch(real: TransitionBatch, model_buffer: ReplayBuffer, real_ratio: float) -> TransitionBatch:
    """``round(real_ratio * B)`` rows of the real batch (its first ones) followed by model transitions, ``B`` rows
    in all; the real batch alone while the model buffer holds fewer than ``B`` transitions."""
    size = real.rewards.shape[0]
    if len(model_buffer) < size:
        return real
    n_real = round(real_ratio * size)
    imagined = model_buffer.sample(size - n_real)
    return TransitionBatch(*(torch.cat([getattr(real, f)[:n_real], getattr(imagined, f)]) for f in _FIELDS))


__all__ = ["ModelSettings", "OnlineDynamics", "TerminationChoice", "mixed_batch"]
