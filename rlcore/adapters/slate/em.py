"""User types and their choice parameters learned by EM from logged choices (as PASTA does), and how well
they match the simulator's.

**Data.** :func:`collect_logs` serves ``num_users`` users of a world random slates (any logging policy works)
and keeps, per user ``n`` and turn ``t`` of its first episode: the request ``p_n``, the history ``h_nt``, the
slate ``A_nt`` and the outcome ``c_nt`` (a slot, or none). The user's type is not logged.

**Model.** The mixture of :class:`~rlcore.adapters.slate.choice.ChoiceModel`: a user of type ``k`` has
request density ``N(p; θ_k, σ²I)`` and chooses by the conditional logit with ``(θ_k, β_k, γ_k, b_k)``; so

    log L = Σ_n log Σ_k π_k N(p_n; θ_k, σ²I) Π_t P_k(c_nt | h_nt, A_nt).

**EM.** E-step: responsibilities ``r_nk ∝ π_k N(p_n; θ_k, σ²I) Π_t P_k(c_nt | h_nt, A_nt)``. M-step:
``π_k = mean_n r_nk`` in closed form; the logit parameters and σ have none, so ``m_steps`` Adam steps on the
expected complete-data log-likelihood ``Σ_n Σ_k r_nk log[N(p_n; θ_k, σ²I) Π_t P_k(...)]`` (a generalised EM:
an M-step only has to raise that objective for the likelihood not to fall; a few small Adam steps do in
practice, which the tests check, though Adam does not guarantee it). Initialisation: k-means++ seeding of θ on the
requests, from ``seed``. Types come out in an arbitrary order: :func:`match_types` aligns them with the
true ones (the permutation that minimises the preference distance) and :func:`recovery_error` reports the
errors after alignment.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch

from rlcore.adapters.slate.choice import ChoiceModel
from rlcore.adapters.slate.env import SlateEnv, random_slates
from rlcore.adapters.slate.world import ItemPool, SlateEnvConfig


@dataclass
class ChoiceLogs:
    """Logged choices of ``U`` users over up to ``T`` turns (``mask`` marks the turns that happened)."""

    prompt: torch.Tensor
    """``[U, d]`` opening requests."""
    history: torch.Tensor
    """``[U, T, d]`` the history each slate was offered at."""
    slates: torch.Tensor
    """``[U, T, m]`` item indices."""
    choices: torch.Tensor
    """``[U, T]`` the slot picked, ``m`` for none."""
    mask: torch.Tensor
    """``[U, T]`` bool, True for turns within the user's episode."""

    def __len__(self) -> int:
        return int(self.prompt.shape[0])


@torch.no_grad()
def collect_logs(config: SlateEnvConfig, num_users: int, seed: int = 0, policy=None) -> ChoiceLogs:
    """The first episode of ``num_users`` users of ``config``'s world (users from reset seed ``seed``), served
    uniformly random slates, or ``policy.act(obs, deterministic=False)`` slates when a policy is given."""
    if num_users < 1:
        raise ValueError(f"num_users must be >= 1, got {num_users}.")
    env = SlateEnv.from_config(config, num_envs=num_users)
    if policy is not None and hasattr(policy, "prepare"):
        policy.prepare(env, seed)
    obs, _ = env.reset(seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    steps, m = config.episode_length, config.slate_size
    prompt = obs["prompt"].clone()
    history = torch.zeros(num_users, steps, config.embedding_dim)
    slates = torch.zeros(num_users, steps, m, dtype=torch.long)
    choices = torch.full((num_users, steps), m, dtype=torch.long)
    mask = torch.zeros(num_users, steps, dtype=torch.bool)
    alive = torch.ones(num_users, dtype=torch.bool)
    for t in range(steps):
        slate = (random_slates(obs["item_mask"], m, generator) if policy is None
                 else policy.act(obs, deterministic=False))
        history[:, t], slates[:, t] = obs["history"], slate
        obs, _reward, terminated, truncated, info = env.step(slate)
        choices[:, t], mask[:, t] = info["choice"], alive
        alive &= ~(terminated | truncated)
        if not alive.any():
            break
    return ChoiceLogs(prompt, history, slates, choices, mask)


def user_log_likelihood(model: ChoiceModel, logs: ChoiceLogs, items: ItemPool,
                        slate_items: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """``log π_k + log N(p_n; θ_k, σ²I) + Σ_t log P_k(c_nt | h_nt, A_nt)``, ``[U, K]``.

    ``slate_items``: the slates' ``(embeddings [U, T, m, d], appeal [U, T, m])``, if already gathered (EM
    evaluates this hundreds of times on the same logs)."""
    embeddings, appeal = slate_items if slate_items is not None else (items.embeddings[logs.slates],
                                                                      items.appeal[logs.slates])
    z = model.slate_utilities(logs.history, embeddings, appeal)  # [U, T, K, m]
    null = model.no_choice.expand(*z.shape[:-1]).unsqueeze(-1)
    log_probs = torch.log_softmax(torch.cat([z, null], -1), -1)  # [U, T, K, m + 1]
    index = logs.choices[:, :, None, None].expand(-1, -1, log_probs.shape[2], 1)
    picked = log_probs.gather(3, index).squeeze(3)  # [U, T, K]
    return model.prompt_log_likelihood(logs.prompt) + (picked * logs.mask[:, :, None]).sum(1)


@dataclass
class EMResult:
    """What `fit_choice_model` returns."""

    model: ChoiceModel
    """The fitted mixture (frozen)."""
    log_likelihood: list[float] = field(default_factory=list)
    """Mean log-likelihood per user after each iteration (non-decreasing, up to the M-step's optimiser)."""
    responsibilities: torch.Tensor | None = None
    """``[U, K]`` posterior of each logged user's type."""


def _kmeans_pp(points: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    centers = [points[torch.randint(len(points), (1,), generator=generator)].squeeze(0)]
    for _ in range(k - 1):
        distance = torch.stack([(points - c).pow(2).sum(1) for c in centers], 1).min(1).values
        centers.append(points[torch.multinomial(distance + 1e-12, 1, generator=generator)].squeeze(0))
    return torch.stack(centers)


def fit_choice_model(logs: ChoiceLogs, items: ItemPool, num_types: int, iterations: int = 30, m_steps: int = 10,
                     learning_rate: float = 0.05, seed: int = 0, tol: float = 1e-5) -> EMResult:
    """Fit a ``num_types`` mixture of conditional-logit users to ``logs`` by EM (see the module docstring).

    Stops after ``iterations``, or earlier once the mean log-likelihood per user rises by less than ``tol``.
    """
    if num_types < 1 or num_types > len(logs):
        raise ValueError(f"num_types must be in [1, number of logged users = {len(logs)}], got {num_types}.")
    if iterations < 1 or m_steps < 1:
        raise ValueError(f"iterations and m_steps must be >= 1, got {iterations} and {m_steps}.")
    items = items.to(logs.prompt.device)
    generator = torch.Generator().manual_seed(seed)
    k = num_types
    model = ChoiceModel(_kmeans_pp(logs.prompt, k, generator), torch.full((k,), 2.0), torch.full((k,), 0.5),
                        torch.ones(k), torch.ones(k), float(logs.prompt.std()))
    model.log_weights.requires_grad_(False)  # π has a closed-form M-step
    optimizer = torch.optim.Adam([model.preferences, model.log_sensitivity, model.appeal, model.no_choice,
                                  model.log_prompt_noise], lr=learning_rate)
    slate_items = (items.embeddings[logs.slates], items.appeal[logs.slates])
    history: list[float] = []
    for _ in range(iterations):
        with torch.no_grad():  # E-step
            joint = user_log_likelihood(model, logs, items, slate_items)
            history.append(float(torch.logsumexp(joint, 1).mean()))
            resp = torch.softmax(joint, 1)
            model.log_weights.copy_(resp.mean(0).clamp_min(1e-8).log())
        if len(history) > 1 and history[-1] - history[-2] < tol:
            break
        for _ in range(m_steps):  # M-step for the parameters without a closed form
            objective = (resp * user_log_likelihood(model, logs, items, slate_items)).sum(1).mean()
            optimizer.zero_grad(set_to_none=True)
            (-objective).backward()
            optimizer.step()
    with torch.no_grad():
        joint = user_log_likelihood(model, logs, items, slate_items)
        history.append(float(torch.logsumexp(joint, 1).mean()))
        resp = torch.softmax(joint, 1)
    return EMResult(model.requires_grad_(False), history, resp)


def match_types(true: ChoiceModel, learned: ChoiceModel) -> list[int]:
    """``perm`` with learned type ``perm[k]`` matched to true type ``k``: the assignment that minimises the
    summed squared preference distance (exhaustive for up to 8 types, else scipy's Hungarian solver)."""
    k = true.num_types
    if learned.num_types != k:
        raise ValueError(f"the models have {k} and {learned.num_types} types; recovery compares equal numbers.")
    cost = torch.cdist(true.preferences.detach().cpu(), learned.preferences.detach().cpu()).pow(2)
    if k <= 8:
        best = min(itertools.permutations(range(k)), key=lambda p: float(sum(cost[i, p[i]] for i in range(k))))
        return list(best)
    from scipy.optimize import linear_sum_assignment

    return [int(j) for j in linear_sum_assignment(cost.numpy())[1]]


def recovery_error(true: ChoiceModel, learned: ChoiceModel) -> dict[str, float | list[int]]:
    """Errors of ``learned`` against ``true`` after matching types (:func:`match_types`): the mean preference
    distance ``‖θ̂ − θ‖``, mean relative sensitivity error ``|β̂ − β|/β``, mean absolute appeal and no-choice
    errors, the largest weight error ``|π̂ − π|`` and the relative request-noise error."""
    perm = match_types(true, learned)
    p = torch.tensor(perm)

    def cpu(x: torch.Tensor) -> torch.Tensor:
        return x.detach().cpu()

    return {
        "permutation": perm,
        "preference_error": float((cpu(true.preferences) - cpu(learned.preferences)[p]).norm(dim=1).mean()),
        "sensitivity_error": float(((cpu(true.sensitivity) - cpu(learned.sensitivity)[p]).abs()
                                    / cpu(true.sensitivity)).mean()),
        "appeal_error": float((cpu(true.appeal) - cpu(learned.appeal)[p]).abs().mean()),
        "no_choice_error": float((cpu(true.no_choice) - cpu(learned.no_choice)[p]).abs().mean()),
        "weight_error": float((cpu(true.weights) - cpu(learned.weights)[p]).abs().max()),
        "prompt_noise_error": float((cpu(true.prompt_noise) - cpu(learned.prompt_noise)).abs()
                                    / cpu(true.prompt_noise)),
    }


__all__ = ["ChoiceLogs", "EMResult", "collect_logs", "fit_choice_model", "match_types", "recovery_error",
           "user_log_likelihood"]
