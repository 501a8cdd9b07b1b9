"""The PPO dialogue manager: a masked categorical policy over the turn's candidates, from rlcore's primitives.

The policy is π(k | h) = softmax over the candidates on offer of ``f(h, c_k)``
(:class:`~rlcore.adapters.dialogue.networks.CandidateScorer` read as logits of a
:class:`~rlcore.networks.MaskedCategorical`, so an expert that abstained has probability exactly 0). Training is
PPO as in :mod:`rlcore.algos.ppo` and the slate adapter's PPO: :func:`~rlcore.objectives.gae` advantages (values
0 at the last turn when ``horizon_aware``: the turn limit is part of the task and the turn is observed),
:func:`~rlcore.objectives.clipped_pg_loss`, :func:`~rlcore.objectives.value_loss` and an entropy bonus, in
shuffled minibatches with gradient-norm clipping, on the shared on-policy loop
(:func:`rlcore.loops.train_on_policy`). Acting deterministically takes the most probable candidate.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any

import torch
import tyro
from torch import nn

from rlcore.adapters.dialogue.env import DialogueEnv
from rlcore.adapters.dialogue.networks import CandidateScorer, StateValue
from rlcore.adapters.dialogue.simulator import DialogueConfig
from rlcore.envs.structured import map_obs
from rlcore.loops import EnvConfig, EnvSource, OnPolicyConfig, Rollout, TrainResult, train_on_policy
from rlcore.networks import MaskedCategorical
from rlcore.objectives import clipped_pg_loss, gae, normalize_advantages, value_loss

ENV_ID = "Dialogue-v0"


def _dialogue_env_config() -> EnvConfig:
    return EnvConfig(id=ENV_ID)


def check_task(config: Any) -> None:
    """The checks that both managers' configs share."""
    if config.env.id != ENV_ID:
        raise ValueError(f"env must be {ENV_ID!r} for a dialogue manager, got {config.env.id!r}; the task is set by "
                         "`dialogue` (--dialogue.experts, --dialogue.reward, ...).")
    if not isinstance(config.dialogue, DialogueConfig):
        raise ValueError(f"dialogue must be a DialogueConfig, got {type(config.dialogue).__name__}.")
    config.dialogue.validate()
    if not 0 < config.gamma <= 1:
        raise ValueError(f"gamma must be in (0, 1], got {config.gamma}.")
    if not config.hidden_sizes or min(config.hidden_sizes) < 1:
        raise ValueError(f"hidden_sizes must be positive, got {config.hidden_sizes}.")


@dataclass
class DialoguePPOConfig(OnPolicyConfig):
    """PPO-manager settings (the shared on-policy loop's are in :class:`~rlcore.loops.OnPolicyConfig`)."""

    env: Annotated[EnvConfig, tyro.conf.Suppress] = field(default_factory=_dialogue_env_config)
    """Not used: the task is `dialogue` (kept so that the shared run session reads the env's name)."""
    dialogue: DialogueConfig = field(default_factory=DialogueConfig)
    """The dialogue task (experts, history encoder, reward, users)."""
    num_envs: int = 64
    """Conversations in parallel."""
    total_steps: int = 50_000
    """Bot turns to train for (summed over parallel conversations)."""
    num_steps: int = 32
    """Turns per conversation slot in each rollout."""
    eval_interval: int = 10_000
    """Evaluate every this many turns (and at the end), at a rollout boundary."""
    eval_episodes: int = 500
    """Users per evaluation (deterministic choices, held-out users)."""
    checkpoint_interval: int = 25_000
    """Checkpoint every this many turns (and at the end), at a rollout boundary."""
    learning_rate: float = 1e-3
    """Adam learning rate."""
    gamma: float = 0.95
    """Discount factor per turn."""
    gae_lambda: float = 0.9
    """GAE lambda."""
    update_epochs: int = 4
    """Passes over each rollout."""
    num_minibatches: int = 4
    """Minibatches per pass."""
    clip_coef: float = 0.2
    """Clipping epsilon of the probability ratio."""
    ent_coef: float = 0.01
    """Weight of the entropy bonus."""
    vf_coef: float = 0.5
    """Weight of the value loss."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip."""
    hidden_sizes: tuple[int, ...] = (128, 128)
    """Hidden layers of the pair network's towers and of the critic."""
    horizon_aware: bool = True
    """Value 0 at the last turn (the turn limit is part of the task)."""

    def validate(self) -> None:
        super().validate()
        check_task(self)
        if (self.num_steps * self.num_envs) % self.num_minibatches:
            raise ValueError(f"num_steps * num_envs = {self.num_steps * self.num_envs} must be divisible by "
                             f"num_minibatches = {self.num_minibatches}.")
        if not 0 <= self.gae_lambda <= 1:
            raise ValueError(f"gae_lambda must be in [0, 1], got {self.gae_lambda}.")
        for name in ("learning_rate", "clip_coef", "max_grad_norm", "update_epochs", "num_minibatches"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}.")


class DialoguePPOAgent:
    """The policy over candidates, its critic, the optimiser and PPO's update (see the module docstring)."""

    name = "PPO manager"

    def __init__(self, config: DialoguePPOConfig, history_dim: int, embedding_dim: int,
                 device: str | torch.device = "cpu") -> None:
        self.config = config
        self.env_config: DialogueConfig = copy.deepcopy(config.dialogue)
        self.device = torch.device(device)
        self.policy = CandidateScorer(history_dim, embedding_dim, config.hidden_sizes).to(self.device)
        self.critic = StateValue(history_dim, config.hidden_sizes).to(self.device)
        self.params = [*self.policy.parameters(), *self.critic.parameters()]
        self.optimizer = torch.optim.Adam(self.params, lr=config.learning_rate, eps=1e-5)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed + 2)
        self.updates = 0

    def distribution(self, obs: dict[str, torch.Tensor]) -> MaskedCategorical:
        return MaskedCategorical(self.policy(obs), obs["candidate_mask"])

    def value(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        v = self.critic(obs)
        return v * (obs["turn"][:, 0] < 1.0) if self.config.horizon_aware else v

    @torch.no_grad()
    def explore(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        action, log_prob = self.distribution(obs).sample_and_log_prob(self.generator)
        return action, {"log_prob": log_prob}

    @torch.no_grad()
    def act(self, obs: dict[str, torch.Tensor], step: int = 0, deterministic: bool = False) -> torch.Tensor:
        dist = self.distribution(obs)
        return dist.mode if deterministic else dist.sample(self.generator)

    def __call__(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.act(obs, deterministic=True)

    def prepare(self, env: DialogueEnv, seed: int = 0) -> None:
        """Check that ``env`` is this manager's task."""
        check_same_task(self, env)

    def update(self, rollout: Rollout, progress: float = 0.0) -> dict[str, torch.Tensor]:
        c = self.config
        flat = map_obs(lambda x: x.flatten(0, 1), rollout.obs)
        steps, n = rollout.rewards.shape
        with torch.no_grad():
            values = self.value(flat).reshape(steps, n)
            next_values = self.value(map_obs(lambda x: x.flatten(0, 1), rollout.final_obs)).reshape(steps, n)
            advantages, returns = gae(rollout.rewards, values, next_values, rollout.terminated, rollout.truncated,
                                      c.gamma, c.gae_lambda)
        actions, old_log_prob = rollout.actions.flatten(0, 1), rollout.extras["log_prob"].flatten()
        advantages, returns = advantages.flatten(), returns.flatten()
        batch = advantages.shape[0]
        size = batch // c.num_minibatches
        metrics: dict[str, list[torch.Tensor]] = {}
        for _ in range(c.update_epochs):
            order = torch.randperm(batch, generator=self.generator, device=self.device)
            for start in range(0, batch, size):
                idx = order[start:start + size]
                mb = map_obs(lambda x, i=idx: x[i], flat)
                dist = self.distribution(mb)
                log_prob, entropy = dist.log_prob(actions[idx]), dist.entropy()
                pg_loss, pg_metrics = clipped_pg_loss(log_prob, old_log_prob[idx], normalize_advantages(
                    advantages[idx]), c.clip_coef)
                v_loss, _ = value_loss(self.value(mb), returns[idx])
                loss = pg_loss + c.vf_coef * v_loss - c.ent_coef * entropy.mean()
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = nn.utils.clip_grad_norm_(self.params, c.max_grad_norm)
                self.optimizer.step()
                self.updates += 1
                for key, value in {"policy_loss": pg_loss.detach(), "value_loss": v_loss.detach(),
                                   "entropy": entropy.detach().mean(), "grad_norm": grad_norm.detach(),
                                   **pg_metrics}.items():
                    metrics.setdefault(key, []).append(value)
        return {key: torch.stack(history).mean() for key, history in metrics.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.state_dict(), "critic": self.critic.state_dict(),
                "optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
                "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = [k for k in ("policy", "critic", "optimizer", "generator", "updates") if k not in state]
        if missing:
            raise ValueError(f"PPO manager state is missing {', '.join(missing)}.")
        self.policy.load_state_dict(state["policy"])
        self.critic.load_state_dict(state["critic"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.updates = state["updates"]


def check_same_task(agent: Any, env: Any) -> None:
    """Refuse an environment of another task than the one ``agent`` was trained on."""
    if not isinstance(env, DialogueEnv) or env.config.key() != agent.env_config.key():
        raise ValueError(f"this manager was trained on the task {agent.env_config}; evaluate it in a DialogueEnv of "
                         "the same DialogueConfig (evaluate(manager, ...) builds one).")


def make_agent(config: DialoguePPOConfig, env: DialogueEnv) -> DialoguePPOAgent:
    if not isinstance(env, DialogueEnv):
        raise ValueError(f"a dialogue manager acts in a DialogueEnv, got {type(env).__name__}.")
    if env.config.key() != config.dialogue.key():
        raise ValueError(f"the environment's task {env.config} differs from config.dialogue {config.dialogue}; pass "
                         "the environment's config as `dialogue`.")
    return DialoguePPOAgent(config, env.history_dim, env.embedding_dim, config.device)


def env_factories(config: Any) -> tuple[EnvSource, EnvSource]:
    """Factories ``seed -> DialogueEnv`` for training (``num_envs`` users) and evaluation (``eval_episodes``)."""
    def train_env(seed: int) -> DialogueEnv:
        return DialogueEnv(config.num_envs, seed=seed, device=config.device, **asdict(config.dialogue))

    def eval_env(seed: int) -> DialogueEnv:
        return DialogueEnv(config.eval_episodes, seed=seed, device=config.device, **asdict(config.dialogue))

    return train_env, eval_env


def train(config: DialoguePPOConfig | None = None, env: EnvSource | None = None,
          eval_env: EnvSource | None = None) -> TrainResult:
    """Train the PPO manager on ``config.dialogue``'s task (or on ``env``)."""
    config = config or DialoguePPOConfig()
    default_env, default_eval = env_factories(config)
    return train_on_policy("dialogue-ppo", config, make_agent, env or default_env, eval_env or default_eval)


__all__ = ["DialoguePPOAgent", "DialoguePPOConfig", "check_same_task", "check_task", "env_factories", "make_agent",
           "train"]
