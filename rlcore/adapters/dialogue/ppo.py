"""The PPO dialogue manager: a masked categorical policy over the turn's candidates, from rlcore's primitives.

The policy is π(k | h) = softmax over the candidates on offer of ``f(h, c_k)``
(:class:`~rlcore.adapters.dialogue.networks.CandidateScorer` read as logits of a
:class:`~rlcore.networks.MaskedCategorical`, so an expert that abstained has probability exactly 0). Training is
the adapters' shared PPO over candidates (:class:`~rlcore.adapters.candidates.CandidatePPOAgent`: GAE, the
clipped policy loss, the value loss and an entropy bonus) on the shared on-policy loop
(:func:`rlcore.loops.train_on_policy`). Acting deterministically takes the most probable candidate.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any

import torch
import tyro

from rlcore.adapters.candidates import CandidatePPOAgent, CandidatePPOSettings
from rlcore.adapters.dialogue.env import DialogueEnv
from rlcore.adapters.dialogue.networks import CandidateScorer, StateValue
from rlcore.adapters.dialogue.simulator import DialogueConfig
from rlcore.loops import EnvConfig, EnvSource, TrainResult, train_on_policy
from rlcore.networks import MaskedCategorical

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


@dataclass
class DialoguePPOConfig(CandidatePPOSettings):
    """PPO-manager settings (PPO over candidates: `CandidatePPOSettings`)."""

    env: Annotated[EnvConfig, tyro.conf.Suppress] = field(default_factory=_dialogue_env_config)
    """Not used: the task is `dialogue` (kept so that the shared run session reads the env's name)."""
    dialogue: DialogueConfig = field(default_factory=DialogueConfig)
    """The dialogue task (experts, history encoder, reward, users)."""
    num_steps: int = 32
    """Turns per conversation slot in each rollout."""
    gamma: float = 0.95
    """Discount factor per turn."""
    num_minibatches: int = 4
    """Minibatches per pass."""
    hidden_sizes: tuple[int, ...] = (128, 128)
    """Hidden layers of the pair network's towers and of the critic."""

    def validate(self) -> None:
        super().validate()
        check_task(self)


class DialoguePPOAgent(CandidatePPOAgent):
    """The masked categorical policy over the turn's candidates and its critic (see the module docstring)."""

    name = "PPO manager"

    def __init__(self, config: DialoguePPOConfig, history_dim: int, embedding_dim: int,
                 device: str | torch.device = "cpu") -> None:
        super().__init__(config, CandidateScorer(history_dim, embedding_dim, config.hidden_sizes),
                         StateValue(history_dim, config.hidden_sizes), device)
        self.env_config: DialogueConfig = copy.deepcopy(config.dialogue)

    def distribution(self, obs: dict[str, torch.Tensor]) -> MaskedCategorical:
        return MaskedCategorical(self.policy(obs), obs["candidate_mask"])

    def log_prob_and_entropy(self, obs: dict[str, torch.Tensor],
                             actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dist = self.distribution(obs)
        return dist.log_prob(actions), dist.entropy()

    @torch.no_grad()
    def explore(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        action, log_prob = self.distribution(obs).sample_and_log_prob(self.generator)
        return action, {"log_prob": log_prob}

    @torch.no_grad()
    def act(self, obs: dict[str, torch.Tensor], step: int = 0, deterministic: bool = False) -> torch.Tensor:
        dist = self.distribution(obs)
        return dist.mode if deterministic else dist.sample(self.generator)

    def prepare(self, env: DialogueEnv, seed: int = 0) -> None:
        """Check that ``env`` is this manager's task."""
        check_same_task(self, env)


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
