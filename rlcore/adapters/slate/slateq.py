"""SlateQ (Ie et al., 2019): Q-learning over (user state, item), with a slate's value decomposed through a
user-choice model and the slate chosen by exact top-k on the decomposed value.

The agent learns ``Q(x, i)``, the value of the user in state ``x`` picking item ``i``, and ``Q(x, ∅)``, of
the user picking nothing. Under the choice model's conditional logit (item log-weights ``z_i(x)``, no-choice
log-weight ``b(x)``; :meth:`~rlcore.adapters.slate.choice.ChoiceModel.item_scores`) a slate's value is

    Q(x, A) = (e^b Q(x, ∅) + Σ_{i∈A} e^{z_i} Q(x, i)) / (e^b + Σ_{i∈A} e^{z_i}),

maximised exactly by :func:`~rlcore.adapters.slate.topk.best_slate`. Each transition ``(x, A, c, r, x')``
trains only the outcome that happened (the picked item, or ∅), towards

    y = r + γ (1 − terminated) max_{A'} Q̄(x', A')      (target networks Q̄, Polyak-averaged)

with rlcore's shared TD pieces (:func:`~rlcore.objectives.clipped_double_q_targets` without the second critic,
:func:`~rlcore.objectives.bellman_loss`, :func:`~rlcore.objectives.polyak_update`). The picked item is read
from the next observation (``last_choice``), so the shared replay buffer and off-policy loop are used as they
are. Acting is ε-greedy over whole slates (a uniformly random slate on a row with probability ε, decayed
linearly).

The choice model is the simulator's true one (``choice_model="true"``) or one learned by EM from logged
choices of users served random slates (``"learned"``, :mod:`~rlcore.adapters.slate.em`), as PASTA does.

Deliberate differences from the paper:

* the decomposition uses the conditional logit of the user's most probable type given its opening request
  (the user's type is latent; see :mod:`~rlcore.adapters.slate.choice`);
* Q-learning targets (max over next slates), the paper's "SlateQ with Q-learning" variant, not SARSA;
* finite horizon: the session length is part of the task and the turn is observed, so values at the last
  turn (``obs["turn"] == 1``) are 0 (``horizon_aware``); the environment still reports the cut as a
  truncation, as the batched-env contract says.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import torch
import tyro

from rlcore.adapters.candidates import CandidateQSettings
from rlcore.adapters.slate.choice import ChoiceModel
from rlcore.adapters.slate.env import SlateEnv, random_slates
from rlcore.adapters.slate.networks import PairScorer, StateValue
from rlcore.adapters.slate.topk import best_slate
from rlcore.adapters.slate.world import ItemPool, SlateEnvConfig
from rlcore.loops import EnvConfig, EnvSource, TrainResult, TransitionBatch, train_off_policy
from rlcore.objectives import bellman_loss, clipped_double_q_targets, polyak_update

ENV_ID = "Slate-v0"
CHOICE_MODELS = ("true", "learned")


def _slate_env_config() -> EnvConfig:
    return EnvConfig(id=ENV_ID)


@dataclass
class SlateQConfig(CandidateQSettings):
    """SlateQ settings (value-based agents over candidates: `CandidateQSettings`)."""

    env: Annotated[EnvConfig, tyro.conf.Suppress] = field(default_factory=_slate_env_config)
    """Not used: the slate world is `slate` (kept so that the shared run session reads the env's name)."""
    slate: SlateEnvConfig = field(default_factory=SlateEnvConfig)
    """The slate world (items, user types, reward, dynamics)."""
    choice_model: Literal["true", "learned"] = "true"
    """The user-choice model the slate value is decomposed through: the simulator's, or learned by EM."""
    em_users: int = 2_000
    """Logged users (served random slates) that EM learns the choice model from (choice_model='learned')."""
    em_types: int | None = None
    """User types EM fits; None: the world's num_user_types."""
    em_iterations: int = 30
    """EM iterations."""

    def validate(self) -> None:
        super().validate()
        if self.env.id != ENV_ID:
            raise ValueError(f"env must be {ENV_ID!r} for SlateQ, got {self.env.id!r}; the world is set by `slate` "
                             "(--slate.num-items, --slate.reward, ...).")
        if not isinstance(self.slate, SlateEnvConfig):
            raise ValueError(f"slate must be a SlateEnvConfig, got {type(self.slate).__name__}.")
        self.slate.validate()
        if self.choice_model not in CHOICE_MODELS:
            raise ValueError(f"choice_model must be one of {', '.join(map(repr, CHOICE_MODELS))}; got "
                             f"{self.choice_model!r}.")
        for name in ("em_users", "em_iterations", "em_types"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}.")


class SlateQAgent:
    """The Q-networks, their targets, the choice model and SlateQ's update (see the module docstring)."""

    name = "SlateQ"

    def __init__(self, config: SlateQConfig, items: ItemPool, choice_model: ChoiceModel,
                 device: str | torch.device = "cpu") -> None:
        self.config = config
        self.env_config: SlateEnvConfig = copy.deepcopy(config.slate)
        self.device = torch.device(device)
        self.items = items.to(self.device)
        self.item_features = self.items.features
        self.choice = copy.deepcopy(choice_model).to(self.device).requires_grad_(False)
        d = config.slate.embedding_dim
        self.q = PairScorer(d, config.hidden_sizes).to(self.device)
        self.q_null = StateValue(d, config.hidden_sizes).to(self.device)
        self.q_target, self.q_null_target = copy.deepcopy(self.q), copy.deepcopy(self.q_null)
        self.params = [*self.q.parameters(), *self.q_null.parameters()]
        self.optimizer = torch.optim.Adam(self.params, lr=config.learning_rate)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed + 3)
        self.updates = 0

    # ------------------------------------------------------------------ values and slates
    def values(self, obs: dict[str, torch.Tensor], target: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Q(x, i) [N, I], Q(x, ∅) [N])``, by the online or the target networks."""
        q, q_null = (self.q_target, self.q_null_target) if target else (self.q, self.q_null)
        items, null = q(obs, self.item_features), q_null(obs)
        if self.config.horizon_aware:
            alive = (obs["turn"][:, 0] < 1.0).to(items.dtype)
            items, null = items * alive[:, None], null * alive
        return items, null

    def best(self, obs: dict[str, torch.Tensor], target: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The best slate of every row under the decomposition, and its value."""
        q_items, q_null = self.values(obs, target)
        log_v, log_v0 = self.choice.item_scores(obs, self.items)
        return best_slate(q_items, q_null, log_v, log_v0, self.env_config.slate_size, obs["item_mask"])

    def epsilon(self, step: int) -> float:
        return self.config.epsilon(step)

    @torch.no_grad()
    def act(self, obs: dict[str, torch.Tensor], step: int = 0, deterministic: bool = False) -> torch.Tensor:
        slate = self.best(obs)[0]
        if deterministic:
            return slate
        explore = torch.rand(slate.shape[0], generator=self.generator, device=self.device) < self.epsilon(step)
        random = random_slates(obs["item_mask"], slate.shape[1], self.generator)
        return torch.where(explore[:, None], random, slate)

    def __call__(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.act(obs, deterministic=True)

    def prepare(self, env: SlateEnv, seed: int = 0) -> None:
        """Check that ``env`` is this agent's world (its Q-values are for these items and users)."""
        if not isinstance(env, SlateEnv) or env.config.world_key() != self.env_config.world_key():
            raise ValueError(f"this SlateQ agent was trained in the world {self.env_config}; evaluate it in an "
                             "environment of the same SlateEnvConfig (evaluate(agent, ...) builds one).")

    # ------------------------------------------------------------------ learning
    def update(self, batch: TransitionBatch) -> dict[str, torch.Tensor]:
        c = self.config
        obs, next_obs = batch.obs, batch.next_obs
        chosen = next_obs["last_choice"]  # the item picked in this transition, -1 for none
        picked = chosen >= 0
        q_pick = self.q(obs, self.item_features, chosen.clamp(min=0)[:, None]).squeeze(1)
        q = torch.where(picked, q_pick, self.q_null(obs))
        with torch.no_grad():
            next_value = self.best(next_obs, target=True)[1]
            targets = clipped_double_q_targets(batch.rewards, batch.terminated, next_value, None, c.gamma)
        loss = bellman_loss(q, targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        polyak_update(self.q_target, self.q, c.tau)
        polyak_update(self.q_null_target, self.q_null, c.tau)
        self.updates += 1
        return {"q_loss": loss.detach(), "q_mean": q.detach().mean(), "target_mean": targets.mean(),
                "pick_rate": picked.float().mean()}

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"q": self.q.state_dict(), "q_null": self.q_null.state_dict(), "q_target": self.q_target.state_dict(),
                "q_null_target": self.q_null_target.state_dict(), "choice": self.choice.state_dict(),
                "optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
                "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = [k for k in ("q", "q_null", "q_target", "q_null_target", "choice", "optimizer", "generator",
                               "updates") if k not in state]
        if missing:
            raise ValueError(f"SlateQ agent state is missing {', '.join(missing)}.")
        for name in ("q", "q_null", "q_target", "q_null_target", "choice"):
            getattr(self, name).load_state_dict(state[name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.updates = state["updates"]


def choice_model_for(config: SlateQConfig, env: SlateEnv) -> ChoiceModel:
    """The choice model ``config`` asks for: the env's true one, or one fitted by EM to logged random slates."""
    if config.choice_model == "true":
        return env.choice_model
    from rlcore.adapters.slate.em import collect_logs, fit_choice_model

    logs = collect_logs(config.slate, config.em_users, seed=config.seed + 11)
    types = config.em_types or config.slate.num_user_types
    return fit_choice_model(logs, env.items.to("cpu"), types, iterations=config.em_iterations,
                            seed=config.seed).model


def make_agent(config: SlateQConfig, env: SlateEnv) -> SlateQAgent:
    if not isinstance(env, SlateEnv):
        raise ValueError(f"SlateQ acts in a SlateEnv, got {type(env).__name__}.")
    if env.config.world_key() != config.slate.world_key():
        raise ValueError(f"the environment's world {env.config} differs from config.slate {config.slate}; pass "
                         "the environment's config as `slate`.")
    return SlateQAgent(config, env.items, choice_model_for(config, env), config.device)


def env_factories(config: Any) -> tuple[EnvSource, EnvSource]:
    """Factories ``seed -> SlateEnv`` for training (``num_envs`` users) and evaluation (``eval_episodes``)."""
    def train_env(seed: int) -> SlateEnv:
        return SlateEnv.from_config(config.slate, config.num_envs, config.device)

    def eval_env(seed: int) -> SlateEnv:
        return SlateEnv.from_config(config.slate, config.eval_episodes, config.device)

    return train_env, eval_env


def train(config: SlateQConfig | None = None, env: EnvSource | None = None,
          eval_env: EnvSource | None = None) -> TrainResult:
    """Train SlateQ in ``config.slate``'s world (or on ``env``); returns the agent, run directory, evaluations."""
    config = config or SlateQConfig()
    default_env, default_eval = env_factories(config)
    return train_off_policy("slateq", config, make_agent, env or default_env, eval_env or default_eval)


__all__ = ["CHOICE_MODELS", "SlateQAgent", "SlateQConfig", "make_agent", "train"]
