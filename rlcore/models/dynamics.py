"""A probabilistic ensemble dynamics model (PETS / MBPO style): ``E`` Gaussian MLPs over ``[s, a]``
predicting the next-state delta and the reward.

Each member ``e`` outputs a mean and a log-variance for the normalised target ``y = [s' - s, r]``::

    y ~ N(mu_e(x), diag exp(logvar_e(x))),   x = normalise([s, a])

* **Learned variance bounds** (Chua et al., 2018, appendix A.1): the raw log-variance is soft-clamped
  between two learned vectors, ``logvar = max - softplus(max - raw)``, then ``min + softplus(logvar - min)``,
  and the loss adds ``0.01 (sum max - sum min)`` so that the bounds tighten around the data.
* **Normalisation** of the inputs ``x`` and of the targets ``y`` is held in module buffers (so it is saved
  and loaded with the weights); :meth:`ProbabilisticEnsemble.update_normalizer` merges batch statistics
  into running ones, :meth:`ProbabilisticEnsemble.set_normalizer` sets them from a whole data set.
* **Elites**: the ``num_elites`` members with the lowest holdout mean-squared error (buffer ``elites``);
  :meth:`ProbabilisticEnsemble.sample` draws each prediction from a uniformly chosen elite (MBPO's
  "TS1" sampling).

:func:`fit_ensemble` trains the ensemble on a whole data set (random holdout split, a bootstrap of the
training split per member, early stopping on the holdout error, then elite selection);
:func:`holdout_mask` gives a fixed, data-defined holdout split for models trained online on replay batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rlcore.networks.ensemble import EnsembleMLP


@dataclass
class ModelPrediction:
    """Samples of one step of the model, one per member: shapes ``[E, B, obs_dim]`` and ``[E, B]``."""

    next_obs: torch.Tensor
    rewards: torch.Tensor


class ProbabilisticEnsemble(nn.Module):
    """``ensemble_size`` Gaussian MLPs ``[s, a] -> N([s' - s, r], diag var)``; see the module docstring."""

    def __init__(self, obs_dim: int, action_dim: int, ensemble_size: int = 7, num_elites: int = 5,
                 hidden_sizes: tuple[int, ...] = (200, 200, 200, 200)) -> None:
        super().__init__()
        if not 1 <= num_elites <= ensemble_size:
            raise ValueError(f"need 1 <= num_elites <= ensemble_size, got num_elites={num_elites}, "
                             f"ensemble_size={ensemble_size}.")
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.ensemble_size, self.num_elites = ensemble_size, num_elites
        in_dim, out_dim = obs_dim + action_dim, obs_dim + 1
        self.net = EnsembleMLP(ensemble_size, in_dim, hidden_sizes, 2 * out_dim, activation=nn.SiLU)
        # Initial bounds of MBPO's implementation: log-variances between -10 and 0.5 (normalised targets).
        self.max_logvar = nn.Parameter(torch.full((out_dim,), 0.5))
        self.min_logvar = nn.Parameter(torch.full((out_dim,), -10.0))
        self.register_buffer("input_mean", torch.zeros(in_dim))
        self.register_buffer("input_std", torch.ones(in_dim))
        self.register_buffer("target_mean", torch.zeros(out_dim))
        self.register_buffer("target_std", torch.ones(out_dim))
        self.register_buffer("normalizer_count", torch.zeros(()))
        self.register_buffer("elites", torch.arange(num_elites))

    # ------------------------------------------------------------ normalisation
    @staticmethod
    def _inputs(obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return torch.cat([obs, actions], dim=-1)

    @staticmethod
    def _targets(obs: torch.Tensor, next_obs: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
        return torch.cat([next_obs - obs, rewards.unsqueeze(-1)], dim=-1)

    @torch.no_grad()
    def set_normalizer(self, obs: torch.Tensor, actions: torch.Tensor, next_obs: torch.Tensor,
                       rewards: torch.Tensor) -> None:
        """Set the input and target statistics from a data set (``[N, ...]`` tensors)."""
        self.normalizer_count.zero_()
        self.update_normalizer(obs, actions, next_obs, rewards)

    @torch.no_grad()
    def update_normalizer(self, obs: torch.Tensor, actions: torch.Tensor, next_obs: torch.Tensor,
                          rewards: torch.Tensor) -> None:
        """Merge a batch's mean and variance into the running statistics (Chan et al.'s parallel update)."""
        n = obs.shape[0]
        if n == 0:
            return
        count = self.normalizer_count
        total = count + n
        for (mean, std), data in (((self.input_mean, self.input_std), self._inputs(obs, actions)),
                                  ((self.target_mean, self.target_std), self._targets(obs, next_obs, rewards))):
            batch_mean, batch_var = data.mean(0), data.var(0, unbiased=False)
            delta = batch_mean - mean
            var = (std.pow(2) * count + batch_var * n + delta.pow(2) * count * n / total) / total
            mean.add_(delta * n / total)
            # A floor on the scale: a constant input or target (e.g. a reward that is always 1) stays finite.
            std.copy_(var.sqrt().clamp_min(1e-6) if count > 0 or n > 1 else torch.ones_like(std))
        self.normalizer_count.copy_(total)

    # ------------------------------------------------------------ prediction
    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and soft-clamped log-variance of the normalised target, each ``[E, B, obs_dim + 1]``.

        ``obs`` and ``actions`` are ``[B, ...]`` (shared by all members) or ``[E, B, ...]`` (one batch each).
        """
        x = (self._inputs(obs, actions) - self.input_mean) / self.input_std
        mean, raw_logvar = self.net(x).chunk(2, dim=-1)
        logvar = self.max_logvar - F.softplus(self.max_logvar - raw_logvar)
        logvar = self.min_logvar + F.softplus(logvar - self.min_logvar)
        return mean, logvar

    def loss(self, obs: torch.Tensor, actions: torch.Tensor, next_obs: torch.Tensor,
             rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gaussian negative log-likelihood (mean over members, samples and dimensions, constant dropped)
        plus the variance-bound penalty; and the per-member mean-squared error of the mean, ``[E]``."""
        mean, logvar = self(obs, actions)
        target = (self._targets(obs, next_obs, rewards) - self.target_mean) / self.target_std
        squared = (mean - target).pow(2)
        nll = (squared * torch.exp(-logvar) + logvar).mean()
        bound_penalty = 0.01 * (self.max_logvar.sum() - self.min_logvar.sum())
        return nll + bound_penalty, squared.detach().mean(dim=(1, 2))

    @torch.no_grad()
    def member_mse(self, obs: torch.Tensor, actions: torch.Tensor, next_obs: torch.Tensor,
                   rewards: torch.Tensor) -> torch.Tensor:
        """Per-member mean-squared error of the predicted mean in normalised target units, ``[E]``."""
        mean, _ = self(obs, actions)
        target = (self._targets(obs, next_obs, rewards) - self.target_mean) / self.target_std
        return (mean - target).pow(2).mean(dim=(1, 2))

    @torch.no_grad()
    def select_elites(self, holdout_mse: torch.Tensor) -> None:
        """Keep the ``num_elites`` members with the lowest holdout error."""
        self.elites.copy_(torch.argsort(holdout_mse)[: self.num_elites])

    @torch.no_grad()
    def predict(self, obs: torch.Tensor, actions: torch.Tensor, generator: torch.Generator | None = None,
                deterministic: bool = False, elites_only: bool = True) -> ModelPrediction:
        """One sampled (or mean, if ``deterministic``) next state and reward per member, in data units.

        Returns ``[K, B, ...]`` with ``K`` the number of elites (``elites_only``) or of members.
        """
        mean, logvar = self(obs, actions)
        if elites_only:
            mean, logvar = mean[self.elites], logvar[self.elites]
        y = mean if deterministic else mean + torch.randn(mean.shape, generator=generator, device=mean.device,
                                                          dtype=mean.dtype) * (0.5 * logvar).exp()
        y = y * self.target_std + self.target_mean
        return ModelPrediction(next_obs=obs + y[..., :-1], rewards=y[..., -1])

    @torch.no_grad()
    def sample(self, obs: torch.Tensor, actions: torch.Tensor,
               generator: torch.Generator | None = None) -> ModelPrediction:
        """One next state and reward per row, each from a uniformly chosen elite: ``[B, ...]``."""
        prediction = self.predict(obs, actions, generator)
        choice = torch.randint(0, self.num_elites, (obs.shape[0],), generator=generator, device=obs.device)
        rows = torch.arange(obs.shape[0], device=obs.device)
        return ModelPrediction(prediction.next_obs[choice, rows], prediction.rewards[choice, rows])


def holdout_mask(obs: torch.Tensor, actions: torch.Tensor, fraction: float, key: torch.Tensor) -> torch.Tensor:
    """A fixed pseudo-random split of transitions: True for the ``fraction`` held out.

    The split is a function of the transition's own values (a random projection, hashed), so a
    transition drawn again from a replay buffer lands on the same side: a model trained online on
    replay batches never trains on its holdout rows. ``key`` is a fixed ``[obs_dim + action_dim]`` vector.
    """
    projection = torch.cat([obs, actions], dim=-1) @ key
    return torch.frac(projection.abs() * 7919.0) < fraction


def fit_ensemble(model: ProbabilisticEnsemble, optimizer: torch.optim.Optimizer, obs: torch.Tensor,
                 actions: torch.Tensor, next_obs: torch.Tensor, rewards: torch.Tensor, *,
                 holdout_fraction: float = 0.2, batch_size: int = 256, max_epochs: int = 100, patience: int = 5,
                 generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Train ``model`` on a whole data set and select its elites; return the holdout errors.

    A random ``holdout_fraction`` of the rows is held out (at most 5,000, as in MBPO); each member trains
    on its own bootstrap of the rest; training stops when no member's holdout error improved by more than
    1% for ``patience`` epochs (or after ``max_epochs``), each member keeping its best weights.
    """
    n = obs.shape[0]
    if n < 2:
        raise ValueError(f"fit_ensemble needs at least 2 transitions, got {n}.")
    if not 0 < holdout_fraction < 1:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}.")
    device = obs.device
    order = torch.randperm(n, generator=generator, device=device)
    n_holdout = max(1, min(int(n * holdout_fraction), 5000))
    hold, train = order[:n_holdout], order[n_holdout:]
    model.set_normalizer(obs[train], actions[train], next_obs[train], rewards[train])
    E = model.ensemble_size
    bootstrap = train[torch.randint(0, train.numel(), (E, train.numel()), generator=generator, device=device)]
    best = model.member_mse(obs[hold], actions[hold], next_obs[hold], rewards[hold])
    best_state = {k: v.clone() for k, v in model.state_dict().items()}
    stale = 0
    for _ in range(max_epochs):
        shuffled = bootstrap.gather(1, torch.argsort(torch.rand(bootstrap.shape, generator=generator,
                                                                device=device), dim=1))
        for start in range(0, shuffled.shape[1], batch_size):
            index = shuffled[:, start:start + batch_size]
            loss, _ = model.loss(obs[index], actions[index], next_obs[index], rewards[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        mse = model.member_mse(obs[hold], actions[hold], next_obs[hold], rewards[hold])
        improved = (best - mse) / best.clamp_min(1e-12) > 0.01
        if improved.any():
            stale = 0
            state = model.state_dict()
            for key, value in state.items():
                # Keep each improved member's weights (ensemble parameters have the member first).
                if value.dim() >= 1 and value.shape[0] == E and key.startswith("net."):
                    best_state[key][improved] = value[improved]
            best = torch.where(improved, mse, best)
        else:
            stale += 1
            if stale >= patience:
                break
    shared = {k: v for k, v in model.state_dict().items() if not k.startswith("net.")}
    model.load_state_dict({**best_state, **shared})
    model.select_elites(best)
    return {"holdout_mse": best, "elites": model.elites.clone()}
