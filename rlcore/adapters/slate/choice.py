"""The user-choice model: a mixture of user types, each a conditional logit over the slate plus a no-choice option.

A user of type ``k`` opens with a request (PASTA: the first prompt) ``p ~ N(θ_k, σ² I)`` and has, at each
turn, the interest ``u = θ_k + h``, where ``h`` (observed, ``obs["history"]``) is the exponential average of
the items it picked so far. Offered the slate ``A`` (``m`` distinct items), it picks

    P_k(i | h, A) = exp(z_ki) / (exp(b_k) + Σ_{j∈A} exp(z_kj)),     z_ki = β_k ⟨θ_k + h, e_i⟩ + γ_k a_i
    P_k(∅ | h, A) = exp(b_k)   / (exp(b_k) + Σ_{j∈A} exp(z_kj))

and the population is the mixture with weights ``π_k``. The same class is the simulator's true model
(:func:`ChoiceModel.from_world`) and the model EM learns from logged choices
(:func:`rlcore.adapters.slate.em.fit_choice_model`), so an agent can be given either.

**What an agent uses.** SlateQ decomposes a slate's value through *one* conditional logit, which is what makes
the best slate an exact top-k (:mod:`~rlcore.adapters.slate.topk`). The user's type is latent, so an agent
takes the most probable type given the opening request, ``argmax_k π_k N(p; θ_k, σ²)``
(:meth:`ChoiceModel.item_scores`). This is a deliberate simplification of the mixture (exact once the posterior
is concentrated, which it is when the types are farther apart than the request noise, as in the default
world); the mixture itself is what EM fits and what the tests compare.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from rlcore.adapters.slate.world import ItemPool, SlateEnvConfig, UserTypes, make_world


class ChoiceModel(nn.Module):
    """A mixture of ``K`` conditional-logit user types (see the module docstring).

    Args:
        preferences: θ ``[K, d]``.
        sensitivity: β ``[K]`` (> 0).
        appeal: γ ``[K]``.
        no_choice: b ``[K]``.
        weights: π ``[K]`` (positive; normalised here).
        prompt_noise: σ > 0 of the opening request around θ_k.
    """

    def __init__(self, preferences: torch.Tensor, sensitivity: torch.Tensor, appeal: torch.Tensor,
                 no_choice: torch.Tensor, weights: torch.Tensor, prompt_noise: float | torch.Tensor) -> None:
        super().__init__()
        k = preferences.shape[0]
        for name, value in (("sensitivity", sensitivity), ("appeal", appeal), ("no_choice", no_choice),
                            ("weights", weights)):
            if tuple(value.shape) != (k,):
                raise ValueError(f"ChoiceModel: {name} must have shape [K] = [{k}], got {list(value.shape)}.")
        if not (sensitivity > 0).all() or not (weights > 0).all() or not float(prompt_noise) > 0:
            raise ValueError("ChoiceModel: sensitivity, weights and prompt_noise must be > 0.")
        self.preferences = nn.Parameter(preferences.detach().clone().float())
        self.log_sensitivity = nn.Parameter(sensitivity.detach().float().log())
        self.appeal = nn.Parameter(appeal.detach().clone().float())
        self.no_choice = nn.Parameter(no_choice.detach().clone().float())
        self.log_weights = nn.Parameter((weights.detach().float() / weights.sum()).log())
        self.log_prompt_noise = nn.Parameter(torch.tensor(math.log(float(prompt_noise))))

    @classmethod
    def from_world(cls, config: SlateEnvConfig, types: UserTypes | None = None) -> ChoiceModel:
        """The simulator's true choice model for ``config``'s world (frozen: no gradients)."""
        types = make_world(config)[1] if types is None else types
        model = cls(types.preferences, types.sensitivity, types.appeal, types.no_choice, types.weights,
                    config.prompt_noise)
        return model.requires_grad_(False)

    # ------------------------------------------------------------------ parameters as tensors
    @property
    def num_types(self) -> int:
        return int(self.preferences.shape[0])

    @property
    def sensitivity(self) -> torch.Tensor:
        return self.log_sensitivity.exp()

    @property
    def weights(self) -> torch.Tensor:
        return torch.softmax(self.log_weights, 0)

    @property
    def prompt_noise(self) -> torch.Tensor:
        return self.log_prompt_noise.exp()

    def describe(self) -> dict[str, Any]:
        """The parameters as plain lists (for logs and result files)."""
        return {"preferences": self.preferences.tolist(), "sensitivity": self.sensitivity.tolist(),
                "appeal": self.appeal.tolist(), "no_choice": self.no_choice.tolist(), "weights": self.weights.tolist(),
                "prompt_noise": float(self.prompt_noise)}

    # ------------------------------------------------------------------ the model
    def prompt_log_likelihood(self, prompt: torch.Tensor) -> torch.Tensor:
        """``log π_k + log N(p; θ_k, σ² I)`` for requests ``[..., d]``: ``[..., K]``."""
        d = prompt.shape[-1]
        sigma = self.prompt_noise
        sq = (prompt.unsqueeze(-2) - self.preferences).pow(2).sum(-1)
        log_normal = -sq / (2 * sigma**2) - d * torch.log(sigma) - 0.5 * d * math.log(2 * math.pi)
        return torch.log_softmax(self.log_weights, 0) + log_normal

    def type_log_posterior(self, prompt: torch.Tensor) -> torch.Tensor:
        """``log P(k | p)``, ``[..., K]``."""
        return torch.log_softmax(self.prompt_log_likelihood(prompt), -1)

    def slate_utilities(self, history: torch.Tensor, embeddings: torch.Tensor, appeal: torch.Tensor) -> torch.Tensor:
        """``z_ki`` for every type: history ``[..., d]``, slate embeddings ``[..., m, d]`` and appeal ``[..., m]``
        give ``[..., K, m]``."""
        interest = self.preferences + history.unsqueeze(-2)  # [..., K, d]
        match = interest @ embeddings.transpose(-1, -2)  # [..., K, m]
        return self.sensitivity[:, None] * match + self.appeal[:, None] * appeal.unsqueeze(-2)

    def slate_log_probs(self, history: torch.Tensor, slate: torch.Tensor, items: ItemPool) -> torch.Tensor:
        """``log P_k(c | h, A)`` for every type and outcome: ``[..., K, m + 1]``, the last column picking nothing.

        ``history [..., d]`` and ``slate [..., m]`` (item indices) share their batch shape."""
        z = self.slate_utilities(history, items.embeddings[slate], items.appeal[slate])
        null = self.no_choice.expand(*z.shape[:-1]).unsqueeze(-1)
        return torch.log_softmax(torch.cat([z, null], -1), -1)

    def mixture_probs(self, prompt: torch.Tensor, history: torch.Tensor, slate: torch.Tensor,
                      items: ItemPool) -> torch.Tensor:
        """``P(c | p, h, A) = Σ_k P(k | p) P_k(c | h, A)``, ``[..., m + 1]``: the population's choice law given the
        request."""
        log_post = self.type_log_posterior(prompt)
        return torch.logsumexp(log_post.unsqueeze(-1) + self.slate_log_probs(history, slate, items), -2).exp()

    def map_type(self, prompt: torch.Tensor) -> torch.Tensor:
        """The most probable type given the request, ``[...]`` int64."""
        return self.prompt_log_likelihood(prompt).argmax(-1)

    def item_scores(self, obs: dict[str, torch.Tensor], items: ItemPool) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z [N, I], b [N])``: the log-weights of every item and of picking nothing, under the most probable type
        of each row (the single conditional logit an agent decomposes a slate through)."""
        k = self.map_type(obs["prompt"])
        interest = self.preferences[k] + obs["history"]  # [N, d]
        z = self.sensitivity[k, None] * (interest @ items.embeddings.T) + self.appeal[k, None] * items.appeal
        return z, self.no_choice[k]

    @torch.no_grad()
    def sample_choice(self, types: torch.Tensor, history: torch.Tensor, slate: torch.Tensor, items: ItemPool,
                      generator: torch.Generator) -> torch.Tensor:
        """The slot each user picks, ``[N]`` int64 in ``[0, m]`` (``m``: nothing), for users of ``types [N]``."""
        log_probs = self.slate_log_probs(history, slate, items)  # [N, K, m + 1]
        rows = log_probs[torch.arange(types.shape[0], device=types.device), types]
        return torch.multinomial(rows.exp(), 1, generator=generator).squeeze(1)


__all__ = ["ChoiceModel"]
