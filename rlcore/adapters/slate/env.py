"""``Slate-v0``: a batched environment where each turn the agent offers a user a slate and the user picks one or none.

One episode is one user. At reset a user type ``k ~ π`` is drawn and the user opens with a request
``p ~ N(θ_k, σ² I)``. Each turn the agent offers a slate of ``slate_size`` distinct items from the pool (the
items on offer that turn: the whole pool, or ``candidates_per_turn`` of them); the user picks by the
conditional logit of its type (:class:`~rlcore.adapters.slate.choice.ChoiceModel`) and the reward is the
satisfaction of the pick (:func:`~rlcore.adapters.slate.world.item_rewards`; 0 for no pick). The user's
state then moves with what was chosen:

* interest: ``h ← (1 − drift) h + drift · e_i`` for a pick ``i`` (the user's taste follows what it picked);
* patience: ``P ← P − 1 + q_i`` for a pick, ``P − 1`` for none. A user whose patience reaches 0 leaves:
  the episode **terminates**. After ``episode_length`` turns it is **truncated**.

So a pick pays now, through satisfaction, and later, through the quality that keeps the user: clickbait
(high appeal, low quality) is picked readily and ends sessions early, which a myopic policy cannot see.

Observations are a dict (``N`` rows)::

    prompt       [N, d]        the opening request (constant within an episode)
    history      [N, d]        h, the running average of the picked items' embeddings
    patience     [N, 1]        P / initial_patience
    turn         [N, 1]        t / episode_length
    last_choice  [N]  int64    the item picked at the previous turn, -1 for none (and at the first turn)
    item_mask    [N, I] bool   the items on offer this turn

The pool is the same for every user of a world, so it is not repeated in every observation: it is
``env.items`` (:class:`~rlcore.adapters.slate.world.ItemPool`; ``env.items.features`` is ``[I, d + 2]``).
Actions are ``[N, slate_size]`` int64 item indices, distinct within a row and on offer (:class:`SlateSpace`);
anything else is a ``ValueError`` naming the rows. The step's ``info`` carries the batched-env contract's
``final_obs`` and ``applied_actions``, plus ``choice`` (the slot picked, ``slate_size`` for none),
``chosen_item`` (-1 for none) and, on the rows that ended, ``episode_metrics``: ``choice_rate`` (picks per turn)
and ``episode_length``.

Seeding: the world (items, types) comes from ``seed``; users come from a separate generator, seeded from
``seed`` at construction and by ``reset(seed=...)``, so held-out users are a reset seed away.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlcore.adapters.slate.choice import ChoiceModel
from rlcore.adapters.slate.world import SlateEnvConfig, item_rewards, make_world
from rlcore.envs.structured import where_rows


class SlateSpace(gym.spaces.MultiDiscrete):
    """A slate: ``slate_size`` distinct indices into a pool of ``num_items`` items (actions ``[N, slate_size]``)."""

    def __init__(self, num_items: int, slate_size: int) -> None:
        super().__init__(np.full(slate_size, num_items, dtype=np.int64))
        self.num_items, self.slate_size = int(num_items), int(slate_size)

    def sample(self, mask: Any = None, probability: Any = None) -> np.ndarray:
        """A uniformly random slate of distinct items (gymnasium's API)."""
        return self.np_random.choice(self.num_items, self.slate_size, replace=False).astype(np.int64)

    def contains(self, x: Any) -> bool:
        x = np.asarray(x)
        return (x.shape == (self.slate_size,) and np.issubdtype(x.dtype, np.integer) and bool((x >= 0).all())
                and bool((x < self.num_items).all()) and len(set(x.tolist())) == self.slate_size)

    def __repr__(self) -> str:
        return f"SlateSpace(num_items={self.num_items}, slate_size={self.slate_size})"


def random_slates(mask: torch.Tensor, slate_size: int, generator: torch.Generator) -> torch.Tensor:
    """Uniformly random slates of distinct items on offer, ``[N, slate_size]`` (top-k of random keys)."""
    keys = torch.rand(mask.shape, generator=generator, device=mask.device).masked_fill(~mask, -1.0)
    return keys.topk(slate_size, dim=1).indices


class SlateEnv:
    """``num_envs`` users at a time in one slate world, stepped as tensors on ``device`` (see the module docstring).

    Args:
        num_envs: users served in parallel.
        num_items: items in the pool (see :class:`SlateEnvConfig` for this and the next three).
        slate_size: items per slate.
        num_user_types: latent user types.
        seed: seed of the world (items and types).
        device: where observations, rewards and flags live.
        **world: any other :class:`SlateEnvConfig` field (``reward``, ``episode_length``, ``embedding_dim``...).
    """

    env_id = "Slate-v0"

    def __init__(self, num_envs: int = 1, num_items: int = 200, slate_size: int = 4, num_user_types: int = 4,
                 seed: int = 0, device: str | torch.device = "cpu", **world: Any) -> None:
        known = {f.name for f in fields(SlateEnvConfig)}
        unknown = sorted(set(world) - known)
        if unknown:
            raise ValueError(f"SlateEnv got unknown argument(s) {unknown}; accepted: num_envs, device and the "
                             f"SlateEnvConfig fields {sorted(known)}.")
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}.")
        self.config = SlateEnvConfig(num_items=num_items, slate_size=slate_size, num_user_types=num_user_types,
                                     seed=seed, **world)
        self.config.validate()
        self.num_envs, self.device = int(num_envs), torch.device(device)
        items, types = make_world(self.config)
        self.items = items.to(self.device)
        self.types = types
        self.choice_model = ChoiceModel.from_world(self.config, types).to(self.device)
        """The simulator's true user model (what SlateQ with the true choice model is given)."""
        c = self.config
        self.action_set = None
        self.action_space = SlateSpace(c.num_items, c.slate_size)
        d, n_items = c.embedding_dim, c.num_items
        self.observation_space = gym.spaces.Dict({
            "prompt": gym.spaces.Box(-np.inf, np.inf, (d,), np.float32),
            "history": gym.spaces.Box(-1.0, 1.0, (d,), np.float32),
            "patience": gym.spaces.Box(0.0, np.inf, (1,), np.float32),
            "turn": gym.spaces.Box(0.0, 1.0, (1,), np.float32),
            "last_choice": gym.spaces.Box(-1, n_items - 1, (), np.int64),
            "item_mask": gym.spaces.Box(0, 1, (n_items,), np.bool_)})
        self.generator = torch.Generator(device=self.device).manual_seed(int(c.seed) + 7_919)
        n = self.num_envs
        self._type = torch.zeros(n, dtype=torch.long, device=self.device)
        self._prompt = torch.zeros(n, d, device=self.device)
        self._history = torch.zeros(n, d, device=self.device)
        self._patience = torch.zeros(n, device=self.device)
        self._turn = torch.zeros(n, dtype=torch.long, device=self.device)
        self._last = torch.full((n,), -1, dtype=torch.long, device=self.device)
        self._mask = torch.ones(n, n_items, dtype=torch.bool, device=self.device)
        self._choices = torch.zeros(n, device=self.device)
        self._new_users(torch.ones(n, dtype=torch.bool, device=self.device))

    @classmethod
    def from_config(cls, config: SlateEnvConfig, num_envs: int = 1, device: str | torch.device = "cpu") -> SlateEnv:
        """The environment of ``config``'s world with ``num_envs`` users at a time."""
        return cls(num_envs=num_envs, device=device, **asdict(config))

    @property
    def obs_dim(self) -> int:
        c = self.config
        return 2 * c.embedding_dim + 2 + 1 + c.num_items

    @property
    def action_dim(self) -> int:
        return self.config.slate_size

    # ------------------------------------------------------------------ dynamics
    def _offer(self) -> torch.Tensor:
        c = self.config
        if c.candidates_per_turn is None:
            return torch.ones(self.num_envs, c.num_items, dtype=torch.bool, device=self.device)
        keys = torch.rand(self.num_envs, c.num_items, generator=self.generator, device=self.device)
        chosen = keys.topk(c.candidates_per_turn, dim=1).indices
        return torch.zeros_like(keys, dtype=torch.bool).scatter_(1, chosen, True)

    def _new_users(self, rows: torch.Tensor) -> None:
        """Draw new users (type, request) on ``rows`` and start their episodes; draws for every row, so the
        generator advances the same way whichever rows end."""
        c = self.config
        weights = self.choice_model.weights.expand(self.num_envs, -1)
        types = torch.multinomial(weights, 1, generator=self.generator).squeeze(1)
        noise = torch.randn(self.num_envs, c.embedding_dim, generator=self.generator, device=self.device)
        prompt = self.choice_model.preferences[types] + c.prompt_noise * noise
        mask = self._offer()
        self._type = torch.where(rows, types, self._type)
        self._prompt = torch.where(rows[:, None], prompt, self._prompt)
        self._history = self._history.masked_fill(rows[:, None], 0.0)
        self._patience = self._patience.masked_fill(rows, c.initial_patience)
        self._turn = self._turn.masked_fill(rows, 0)
        self._last = self._last.masked_fill(rows, -1)
        self._mask = torch.where(rows[:, None], mask, self._mask)
        self._choices = self._choices.masked_fill(rows, 0.0)

    def _obs(self) -> dict[str, torch.Tensor]:
        c = self.config
        return {"prompt": self._prompt.clone(), "history": self._history.clone(),
                "patience": (self._patience / c.initial_patience)[:, None],
                "turn": (self._turn.float() / c.episode_length)[:, None], "last_choice": self._last.clone(),
                "item_mask": self._mask.clone()}

    def check_slates(self, actions: Any) -> torch.Tensor:
        """Raise a ``ValueError`` naming the problem for slates that do not fit (shape, dtype, range, repeats,
        items not on offer); return them as int64 on the device."""
        n, m, num_items = self.num_envs, self.config.slate_size, self.config.num_items
        if not isinstance(actions, torch.Tensor) or tuple(actions.shape) != (n, m):
            got = list(actions.shape) if isinstance(actions, torch.Tensor) else type(actions).__name__
            raise ValueError(f"slates must be a [num_envs, slate_size] = [{n}, {m}] tensor of item indices, got {got}.")
        if actions.is_floating_point() or actions.dtype == torch.bool or actions.is_complex():
            raise ValueError(f"slates must be integer item indices (torch.long), got dtype {actions.dtype}; use "
                             ".long() on the indices.")
        actions = actions.to(self.device).long()
        bad = ((actions < 0) | (actions >= num_items)).any(1)
        if bad.any():
            raise ValueError(f"slate items must be in [0, num_items) = [0, {num_items}); rows "
                             f"{bad.nonzero().flatten().tolist()[:10]} are not.")
        ordered = actions.sort(1).values
        repeated = (ordered[:, 1:] == ordered[:, :-1]).any(1)
        if repeated.any():
            raise ValueError(f"a slate holds distinct items; rows {repeated.nonzero().flatten().tolist()[:10]} repeat "
                             "an item (pick with topk, or sample without replacement).")
        offered = self._mask.gather(1, actions).all(1)
        if not offered.all():
            raise ValueError(f"rows {(~offered).nonzero().flatten().tolist()[:10]} offer items that are not on offer "
                             "this turn (obs['item_mask'] False); choose among the items on offer.")
        return actions

    def reset(self, seed: int | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        if seed is not None:
            self.generator.manual_seed(int(seed))
        self._new_users(torch.ones(self.num_envs, dtype=torch.bool, device=self.device))
        return self._obs(), {}

    def step(self, actions: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor,
                                                   torch.Tensor, dict[str, Any]]:
        c = self.config
        slate = self.check_slates(actions)
        choice = self.choice_model.sample_choice(self._type, self._history, slate, self.items, self.generator)
        picked = choice < c.slate_size
        item = slate.gather(1, choice.clamp(max=c.slate_size - 1)[:, None]).squeeze(1)
        item = torch.where(picked, item, torch.full_like(item, -1))
        safe = item.clamp(min=0)
        preference = self.choice_model.preferences[self._type]
        reward = item_rewards(c.reward, preference, self.items, safe[:, None]).squeeze(1) * picked

        quality = self.items.quality[safe] * picked
        embedding = self.items.embeddings[safe]
        self._history = torch.where(picked[:, None], (1 - c.drift) * self._history + c.drift * embedding,
                                    self._history)
        self._patience = (self._patience - 1.0 + quality).clamp(max=float(c.episode_length))
        self._turn += 1
        self._last = item
        self._choices += picked.float()
        terminated = self._patience <= 0
        truncated = (self._turn >= c.episode_length) & ~terminated
        done = terminated | truncated
        metrics = {"choice_rate": self._choices / self._turn.float(), "episode_length": self._turn.float()}
        self._mask = torch.where(done[:, None], self._mask, self._offer())
        final_obs = self._obs()
        # Same-step auto-reset: rows that ended start a new user; final_obs keeps the last observation.
        self._new_users(done)
        obs = where_rows(done, self._obs(), final_obs)
        info = {"final_obs": final_obs, "applied_actions": slate, "choice": choice, "chosen_item": item,
                "episode_metrics": metrics}
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        """Nothing to release: the state is a few tensors."""

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"env_id": self.env_id, "num_envs": self.num_envs, "world": list(self.config.world_key()),
                "type": self._type.clone(), "prompt": self._prompt.clone(), "history": self._history.clone(),
                "patience": self._patience.clone(), "turn": self._turn.clone(), "last": self._last.clone(),
                "mask": self._mask.clone(), "choices": self._choices.clone(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("env_id") != self.env_id or state.get("num_envs") != self.num_envs:
            raise ValueError(f"environment state is for {state.get('num_envs')} x {state.get('env_id')}, this "
                             f"environment is {self.num_envs} x {self.env_id}.")
        if list(state.get("world", [])) != list(self.config.world_key()):
            raise ValueError("environment state is from another slate world (config differs); build the env with "
                             "the same SlateEnvConfig.")
        for name in ("type", "prompt", "history", "patience", "turn", "last", "mask", "choices"):
            setattr(self, f"_{name}", state[name].to(self.device).clone())
        self.generator.set_state(state["generator"])

    def __repr__(self) -> str:
        c = self.config
        return (f"SlateEnv(num_envs={self.num_envs}, num_items={c.num_items}, slate_size={c.slate_size}, "
                f"num_user_types={c.num_user_types}, seed={c.seed}, reward={c.reward!r}, device={self.device})")


__all__ = ["SlateEnv", "SlateSpace", "random_slates"]
