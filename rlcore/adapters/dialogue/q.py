"""The Q dialogue manager: Q-learning over (state, candidate-embedding) pairs, as in dynamic planning.

``Q(h, c)`` is a :class:`~rlcore.adapters.dialogue.networks.CandidateScorer`, so it scores whatever candidates
a turn offers. Each transition ``(h, k, r, h')`` trains ``Q(h, c_k)`` towards the clipped double-Q target of
CAQL and TD3, maximised over the **next turn's offered candidates** (read from the stored next observation):

    k' = argmax_{k on offer at h'} Q̄₁(h', c'_k),    y = r + γ (1 − terminated) min(Q̄₁(h', c'_k'), Q̄₂(h', c'_k'))

with rlcore's shared TD pieces (:func:`~rlcore.objectives.clipped_double_q_targets`,
:func:`~rlcore.objectives.bellman_loss`, :func:`~rlcore.objectives.polyak_update`) on the shared replay buffer
and off-policy loop. Two online critics are trained (each towards the same target), two Polyak-averaged
targets are kept. Acting is ε-greedy over the candidates on offer (a uniformly random one on a row with
probability ε, decayed linearly); deterministic acting is the argmax of ``Q₁``. Values at the last turn are 0
when ``horizon_aware``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Annotated, Any

import torch
import tyro

from rlcore.adapters.candidates import CandidateQSettings
from rlcore.adapters.dialogue.env import DialogueEnv
from rlcore.adapters.dialogue.networks import CandidateScorer
from rlcore.adapters.dialogue.ppo import _dialogue_env_config, check_same_task, check_task, env_factories
from rlcore.adapters.dialogue.simulator import DialogueConfig
from rlcore.loops import EnvConfig, EnvSource, TrainResult, TransitionBatch, train_off_policy
from rlcore.objectives import bellman_loss, clipped_double_q_targets, polyak_update


@dataclass
class DialogueQConfig(CandidateQSettings):
    """Q-manager settings (value-based agents over candidates:
    `CandidateQSettings`)."""

    env: Annotated[EnvConfig, tyro.conf.Suppress] = field(default_factory=_dialogue_env_config)
    """Not used: the task is `dialogue`."""
    dialogue: DialogueConfig = field(default_factory=DialogueConfig)
    """The dialogue task (experts, history encoder, reward, users)."""
    gamma: float = 0.95
    """Discount factor per turn."""
    hidden_sizes: tuple[int, ...] = (128, 128)
    """Hidden layers of the pair network's towers (the last is the width of the pair layer)."""
    epsilon_decay_steps: int = 20_000
    """Turns over which epsilon decays linearly (see `linear_epsilon`)."""

    def validate(self) -> None:
        super().validate()
        check_task(self)


class DialogueQAgent:
    """Twin pair critics, their targets and the clipped double-Q update (see the module docstring)."""

    name = "Q manager"

    def __init__(self, config: DialogueQConfig, history_dim: int, embedding_dim: int,
                 device: str | torch.device = "cpu") -> None:
        self.config = config
        self.env_config: DialogueConfig = copy.deepcopy(config.dialogue)
        self.device = torch.device(device)
        self.q1 = CandidateScorer(history_dim, embedding_dim, config.hidden_sizes).to(self.device)
        self.q2 = CandidateScorer(history_dim, embedding_dim, config.hidden_sizes).to(self.device)
        self.q1_target, self.q2_target = copy.deepcopy(self.q1), copy.deepcopy(self.q2)
        self.optimizer = torch.optim.Adam([*self.q1.parameters(), *self.q2.parameters()], lr=config.learning_rate)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed + 3)
        self.updates = 0

    def q_values(self, obs: dict[str, torch.Tensor], net: CandidateScorer | None = None) -> torch.Tensor:
        """``Q(h, c_k)`` of every slot ``[N, K]``, −inf where no candidate is on offer, 0 at the last turn."""
        q = (net or self.q1)(obs)
        if self.config.horizon_aware:
            q = q * (obs["turn"] < 1.0).to(q.dtype)
        return q.masked_fill(~obs["candidate_mask"], -torch.inf)

    def epsilon(self, step: int) -> float:
        return self.config.epsilon(step)

    @torch.no_grad()
    def act(self, obs: dict[str, torch.Tensor], step: int = 0, deterministic: bool = False) -> torch.Tensor:
        greedy = self.q_values(obs).argmax(1)
        if deterministic:
            return greedy
        explore = torch.rand(greedy.shape[0], generator=self.generator, device=self.device) < self.epsilon(step)
        random = torch.multinomial(obs["candidate_mask"].float(), 1, generator=self.generator).squeeze(1)
        return torch.where(explore, random, greedy)

    def __call__(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.act(obs, deterministic=True)

    def prepare(self, env: DialogueEnv, seed: int = 0) -> None:
        """Check that ``env`` is this manager's task."""
        check_same_task(self, env)

    def update(self, batch: TransitionBatch) -> dict[str, torch.Tensor]:
        c = self.config
        obs, next_obs = batch.obs, batch.next_obs
        action = batch.actions.long()[:, None]
        q1 = self.q1(obs).gather(1, action).squeeze(1)
        q2 = self.q2(obs).gather(1, action).squeeze(1)
        with torch.no_grad():
            next_q1 = self.q_values(next_obs, self.q1_target)
            best = next_q1.argmax(1, keepdim=True)  # the max over the next turn's offered candidates
            alive = (next_obs["turn"][:, 0] < 1.0).float() if c.horizon_aware else 1.0
            next_q2 = self.q2_target(next_obs).gather(1, best).squeeze(1) * alive
            targets = clipped_double_q_targets(batch.rewards, batch.terminated, next_q1.gather(1, best).squeeze(1),
                                               next_q2, c.gamma)
        loss = bellman_loss(q1, targets) + bellman_loss(q2, targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        polyak_update(self.q1_target, self.q1, c.tau)
        polyak_update(self.q2_target, self.q2, c.tau)
        self.updates += 1
        return {"q_loss": loss.detach(), "q_mean": q1.detach().mean(), "target_mean": targets.mean()}

    def state_dict(self) -> dict[str, Any]:
        return {"q1": self.q1.state_dict(), "q2": self.q2.state_dict(), "q1_target": self.q1_target.state_dict(),
                "q2_target": self.q2_target.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        keys = ("q1", "q2", "q1_target", "q2_target", "optimizer", "generator", "updates")
        missing = [k for k in keys if k not in state]
        if missing:
            raise ValueError(f"Q manager state is missing {', '.join(missing)}.")
        for name in keys[:4]:
            getattr(self, name).load_state_dict(state[name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.updates = state["updates"]


def make_agent(config: DialogueQConfig, env: DialogueEnv) -> DialogueQAgent:
    if not isinstance(env, DialogueEnv):
        raise ValueError(f"a dialogue manager acts in a DialogueEnv, got {type(env).__name__}.")
    if env.config.key() != config.dialogue.key():
        raise ValueError(f"the environment's task {env.config} differs from config.dialogue {config.dialogue}.")
    return DialogueQAgent(config, env.history_dim, env.embedding_dim, config.device)


def train(config: DialogueQConfig | None = None, env: EnvSource | None = None,
          eval_env: EnvSource | None = None) -> TrainResult:
    """Train the Q manager on ``config.dialogue``'s task (or on ``env``)."""
    config = config or DialogueQConfig()
    default_env, default_eval = env_factories(config)
    return train_off_policy("dialogue-q", config, make_agent, env or default_env, eval_env or default_eval)


__all__ = ["DialogueQAgent", "DialogueQConfig", "make_agent", "train"]
