"""PPO over slates, from rlcore's shared primitives: a baseline that learns a slate policy without a choice model.

The policy builds a slate by picking ``m`` items one after another without replacement, each pick a
:class:`~rlcore.networks.MaskedCategorical` over the items still on offer, with logits ``f(x, i)`` from the same
pair network as SlateQ (:class:`~rlcore.adapters.slate.networks.PairScorer`):

    log π(A | x) = Σ_{j=1..m} log softmax_{i ∉ A_{<j}, on offer} f(x, i) [a_j]

(a Plackett-Luce policy over ordered slates). Training is the adapters' shared PPO over candidates
(:class:`~rlcore.adapters.candidates.CandidatePPOAgent`: GAE advantages bootstrapping through truncation, with
values 0 at the last turn when ``horizon_aware`` as SlateQ does, the clipped policy loss, the value loss and
an entropy bonus, here the sum of the picks' entropies) on the shared on-policy loop
(:func:`rlcore.loops.train_on_policy`).
Acting deterministically offers the ``m`` items of highest logit.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Annotated

import torch
import tyro

from rlcore.adapters.candidates import CandidatePPOAgent, CandidatePPOSettings
from rlcore.adapters.slate.env import SlateEnv
from rlcore.adapters.slate.networks import PairScorer, StateValue
from rlcore.adapters.slate.slateq import ENV_ID, _slate_env_config, env_factories
from rlcore.adapters.slate.world import ItemPool, SlateEnvConfig
from rlcore.loops import EnvConfig, EnvSource, TrainResult, train_on_policy
from rlcore.networks import MaskedCategorical


@dataclass
class SlatePPOConfig(CandidatePPOSettings):
    """PPO-over-slates settings (PPO over candidates: `CandidatePPOSettings`)."""

    env: Annotated[EnvConfig, tyro.conf.Suppress] = field(default_factory=_slate_env_config)
    """Not used: the slate world is `slate`."""
    slate: SlateEnvConfig = field(default_factory=SlateEnvConfig)
    """The slate world (items, user types, reward, dynamics)."""

    def validate(self) -> None:
        super().validate()
        if self.env.id != ENV_ID:
            raise ValueError(f"env must be {ENV_ID!r} for slate PPO, got {self.env.id!r}; the world is set by `slate`.")
        if not isinstance(self.slate, SlateEnvConfig):
            raise ValueError(f"slate must be a SlateEnvConfig, got {type(self.slate).__name__}.")
        self.slate.validate()


class SlatePPOAgent(CandidatePPOAgent):
    """The Plackett-Luce slate policy and its critic (see the module docstring)."""

    name = "SlatePPO"

    def __init__(self, config: SlatePPOConfig, items: ItemPool, device: str | torch.device = "cpu") -> None:
        d = config.slate.embedding_dim
        super().__init__(config, PairScorer(d, config.hidden_sizes), StateValue(d, config.hidden_sizes), device)
        self.env_config: SlateEnvConfig = copy.deepcopy(config.slate)
        self.items = items.to(self.device)
        self.item_features = self.items.features

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

    def log_prob_and_entropy(self, obs: dict[str, torch.Tensor],
                             actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, log_prob, entropy = self._picks(self.policy(obs, self.item_features), obs["item_mask"], actions)
        return log_prob, entropy

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

    def prepare(self, env: SlateEnv, seed: int = 0) -> None:
        """Check that ``env`` is this agent's world."""
        if not isinstance(env, SlateEnv) or env.config.world_key() != self.env_config.world_key():
            raise ValueError(f"this slate PPO agent was trained in the world {self.env_config}; evaluate it in an "
                             "environment of the same SlateEnvConfig.")


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
