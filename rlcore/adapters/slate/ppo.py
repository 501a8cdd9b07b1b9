"""PPO over slates, from rlcore's shared primitives: a baseline that learns a slate policy without a choice model.

The policy builds a slate by picking ``m`` items one after another without replacement, each pick a
:class:`~rlcore.networks.MaskedCategorical` over the items still on offer, with logits ``f(x, i)`` from the same
pair network as SlateQ (:class:`~rlcore.adapters.slate.networks.PairScorer`):

    log π(A | x) = Σ_{j=1..m} log softmax_{i ∉ A_{<j}, on offer} f(x, i) [a_j]

(a Plackett-Luce policy over ordered slates). Training is PPO as in :mod:`rlcore.algos.ppo`:
:func:`~rlcore.objectives.gae` advantages (bootstrapping through truncation, with values 0 at the last turn
when ``horizon_aware``, as SlateQ does), :func:`~rlcore.objectives.clipped_pg_loss`,
:func:`~rlcore.objectives.value_loss` and an entropy bonus (the sum of the picks' entropies), in shuffled
minibatches with gradient-norm clipping, on the shared on-policy loop (:func:`rlcore.loops.train_on_policy`).
Acting deterministically offers the ``m`` items of highest logit.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Annotated, Any

import torch
import tyro
from torch import nn

from rlcore.adapters.slate.env import SlateEnv
from rlcore.adapters.slate.networks import PairScorer, StateValue
from rlcore.adapters.slate.slateq import ENV_ID, _slate_env_config, env_factories
from rlcore.adapters.slate.world import ItemPool, SlateEnvConfig
from rlcore.envs.structured import map_obs
from rlcore.loops import EnvConfig, EnvSource, OnPolicyConfig, Rollout, TrainResult, train_on_policy
from rlcore.networks import MaskedCategorical
from rlcore.objectives import clipped_pg_loss, gae, normalize_advantages, value_loss


@dataclass
class SlatePPOConfig(OnPolicyConfig):
    """PPO-over-slates settings (the shared on-policy loop's are in :class:`~rlcore.loops.OnPolicyConfig`)."""

    env: Annotated[EnvConfig, tyro.conf.Suppress] = field(default_factory=_slate_env_config)
    """Not used: the slate world is `slate`."""
    slate: SlateEnvConfig = field(default_factory=SlateEnvConfig)
    """The slate world (items, user types, reward, dynamics)."""
    num_envs: int = 64
    """Users served in parallel."""
    total_steps: int = 50_000
    """User turns to train for (summed over parallel users)."""
    num_steps: int = 16
    """Turns per user in each rollout."""
    eval_interval: int = 10_000
    """Evaluate every this many turns (and at the end), at a rollout boundary."""
    eval_episodes: int = 500
    """Users per evaluation (deterministic slates, held-out users)."""
    checkpoint_interval: int = 25_000
    """Checkpoint every this many turns (and at the end), at a rollout boundary."""
    learning_rate: float = 1e-3
    """Adam learning rate."""
    gamma: float = 0.9
    """Discount factor per turn."""
    gae_lambda: float = 0.9
    """GAE lambda."""
    update_epochs: int = 4
    """Passes over each rollout."""
    num_minibatches: int = 8
    """Minibatches per pass."""
    clip_coef: float = 0.2
    """Clipping epsilon of the probability ratio."""
    ent_coef: float = 0.01
    """Weight of the entropy bonus."""
    vf_coef: float = 0.5
    """Weight of the value loss."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip."""
    hidden_sizes: tuple[int, ...] = (64, 32)
    """Hidden layers of the pair network's towers and of the critic."""
    horizon_aware: bool = True
    """Value 0 at the last turn (the session length is part of the task)."""

    def validate(self) -> None:
        super().validate()
        if self.env.id != ENV_ID:
            raise ValueError(f"env must be {ENV_ID!r} for slate PPO, got {self.env.id!r}; the world is set by `slate`.")
        if not isinstance(self.slate, SlateEnvConfig):
            raise ValueError(f"slate must be a SlateEnvConfig, got {type(self.slate).__name__}.")
        self.slate.validate()
        if (self.num_steps * self.num_envs) % self.num_minibatches:
            raise ValueError(f"num_steps * num_envs = {self.num_steps * self.num_envs} must be divisible by "
                             f"num_minibatches = {self.num_minibatches}.")
        if not 0 < self.gamma <= 1 or not 0 <= self.gae_lambda <= 1:
            raise ValueError(f"need 0 < gamma <= 1 and 0 <= gae_lambda <= 1, got {self.gamma}, {self.gae_lambda}.")
        for name in ("learning_rate", "clip_coef", "max_grad_norm", "update_epochs", "num_minibatches"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}.")
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise ValueError(f"hidden_sizes must be positive, got {self.hidden_sizes}.")


class SlatePPOAgent:
    """The slate policy, its critic, the optimiser and PPO's update (see the module docstring)."""

    name = "SlatePPO"

    def __init__(self, config: SlatePPOConfig, items: ItemPool, device: str | torch.device = "cpu") -> None:
        self.config = config
        self.env_config: SlateEnvConfig = copy.deepcopy(config.slate)
        self.device = torch.device(device)
        self.items = items.to(self.device)
        self.item_features = self.items.features
        d = config.slate.embedding_dim
        self.policy = PairScorer(d, config.hidden_sizes).to(self.device)
        self.critic = StateValue(d, config.hidden_sizes).to(self.device)
        self.params = [*self.policy.parameters(), *self.critic.parameters()]
        self.optimizer = torch.optim.Adam(self.params, lr=config.learning_rate, eps=1e-5)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed + 2)
        self.updates = 0

    def _picks(self, logits: torch.Tensor, mask: torch.Tensor, slate: torch.Tensor | None = None,
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample a slate pick by pick (or score the given one): ``(slate [N, m], log π [N], entropy [N])``."""
        picks, log_prob, entropy = [], torch.zeros_like(logits[:, 0]), torch.zeros_like(logits[:, 0])
        for j in range(self.env_config.slate_size):
            dist = MaskedCategorical(logits, mask)
            if slate is None:
                pick, lp = dist.sample_and_log_prob(self.generator)
            else:
                pick = slate[:, j]
                lp = dist.log_prob(pick)
            picks.append(pick)
            log_prob, entropy = log_prob + lp, entropy + dist.entropy()
            mask = mask.scatter(1, pick[:, None], False)
        return torch.stack(picks, 1), log_prob, entropy

    def value(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        v = self.critic(obs)
        return v * (obs["turn"][:, 0] < 1.0) if self.config.horizon_aware else v

    @torch.no_grad()
    def explore(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        slate, log_prob, _ = self._picks(self.policy(obs, self.item_features), obs["item_mask"])
        return slate, {"log_prob": log_prob}

    @torch.no_grad()
    def act(self, obs: dict[str, torch.Tensor], step: int = 0, deterministic: bool = False) -> torch.Tensor:
        logits = self.policy(obs, self.item_features)
        if deterministic:
            return logits.masked_fill(~obs["item_mask"], -torch.inf).topk(self.env_config.slate_size, 1).indices
        return self._picks(logits, obs["item_mask"])[0]

    def __call__(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.act(obs, deterministic=True)

    def prepare(self, env: SlateEnv, seed: int = 0) -> None:
        """Check that ``env`` is this agent's world."""
        if not isinstance(env, SlateEnv) or env.config.world_key() != self.env_config.world_key():
            raise ValueError(f"this slate PPO agent was trained in the world {self.env_config}; evaluate it in an "
                             "environment of the same SlateEnvConfig.")

    def update(self, rollout: Rollout, progress: float = 0.0) -> dict[str, torch.Tensor]:
        c = self.config
        flat = map_obs(lambda x: x.flatten(0, 1), rollout.obs)
        steps, n = rollout.rewards.shape
        with torch.no_grad():
            values = self.value(flat).reshape(steps, n)
            next_values = self.value(map_obs(lambda x: x.flatten(0, 1), rollout.final_obs)).reshape(steps, n)
            continues = ~(rollout.terminated | rollout.truncated)
            next_values[:-1] = torch.where(continues[:-1], values[1:], next_values[:-1])
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
                _, log_prob, entropy = self._picks(self.policy(mb, self.item_features), mb["item_mask"], actions[idx])
                adv = normalize_advantages(advantages[idx])
                pg_loss, pg_metrics = clipped_pg_loss(log_prob, old_log_prob[idx], adv, c.clip_coef)
                v_loss, _ = value_loss(self.critic(mb), returns[idx])
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
            raise ValueError(f"slate PPO agent state is missing {', '.join(missing)}.")
        self.policy.load_state_dict(state["policy"])
        self.critic.load_state_dict(state["critic"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.updates = state["updates"]


def make_agent(config: SlatePPOConfig, env: SlateEnv) -> SlatePPOAgent:
    if not isinstance(env, SlateEnv):
        raise ValueError(f"slate PPO acts in a SlateEnv, got {type(env).__name__}.")
    if env.config.world_key() != config.slate.world_key():
        raise ValueError(f"the environment's world {env.config} differs from config.slate {config.slate}.")
    return SlatePPOAgent(config, env.items, config.device)


def train(config: SlatePPOConfig | None = None, env: EnvSource | None = None,
          eval_env: EnvSource | None = None) -> TrainResult:
    """Train PPO over slates in ``config.slate``'s world (or on ``env``)."""
    config = config or SlatePPOConfig()
    default_env, default_eval = env_factories(config)
    return train_on_policy("slate-ppo", config, make_agent, env or default_env, eval_env or default_eval)


__all__ = ["SlatePPOAgent", "SlatePPOConfig", "make_agent", "train"]
