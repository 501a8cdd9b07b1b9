"""RL fine-tuning of a denoiser against a reward, from the shared objectives: DPOK, DDPO-style PPO, RWR and
f-divergence-regularised PG, and the exact optimum they are measured against.

Every method maximises ``E_{p_θ}[r(x_0)] − β D(p_θ ‖ p_ref)`` for a frozen copy ``p_ref`` of the pretrained
model, and every one is built from :mod:`rlcore.objectives` over the per-step Gaussian log-probs of
:mod:`~rlcore.adapters.diffusion.steps`:

==========  =======================================================================================
``"dpok"``  DPOK: the policy gradient of the trajectory with a learned value baseline ``V(x_t, t)``
            (:func:`~rlcore.objectives.clipped_pg_loss` over each step, advantages ``R − V`` in reward
            units, so that β weighs the KL exactly) plus
            ``β`` × the closed-form per-step KL to the reference (:func:`~rlcore.objectives.diag_gaussian_kl`)
``"ppo"``   DDPO: the clipped ratio over every step with batch-normalised returns as advantages
            (:func:`~rlcore.objectives.normalize_advantages`; per condition when conditioned), and the same
            per-step KL term (``kl_weight=0`` is DDPO without KL)
``"rwr"``   reward-weighted regression (Lee et al.; DiffCon's ``exp(r/β)`` weights): the denoising loss on
            samples of the reference weighted by :func:`~rlcore.objectives.rwr_weights` (``softmax(r/β)``
            over the data set, applied by resampling), plus ``pretrain_weight`` × the unweighted denoising
            loss. Its fixed point is exactly ``p* ∝ p_ref exp(r/β)``, the optimum below
``"fpg"``   f-divergence-regularised PG (DiffCon): the clipped PG term (advantages: the reward minus the
            batch mean) plus ``β`` × the f-divergence of each step (``divergence``: ``"kl"``,
            ``"reverse_kl"``, ``"chi2"``) in closed form (:meth:`GaussianSteps.divergence`, equal to
            :func:`~rlcore.objectives.f_divergence`'s sample estimate in expectation, tested). The sample
            estimates were measured too noisy to regularise with: at samples of the reference step
            (DiffCon's ``E_ref[f(π/π_ref)]``) the trajectory KL ended at 12x the optimum's on the ring
==========  =======================================================================================

**The exact optimum** (spec section 0): the maximiser of ``E_p[r] − β KL(p ‖ p_ref)`` is
``p* ∝ p_ref exp(r/β)``, with ``E_{p*}[r] = E_ref[r e^{r/β}] / E_ref[e^{r/β}]`` and
``KL(p* ‖ p_ref) = E_{p*}[r]/β − log E_ref[e^{r/β}]``, estimated to high precision by sampling the
reference (:func:`kl_optimum`).

**KL of the fine-tuned sampler** (:attr:`FinetuneResult.kl_to_reference`): for samples of a few dimensions
the nearest-neighbour estimate of the KL between the two samplers' outputs (:func:`knn_kl`), else
:attr:`FinetuneResult.trajectory_kl`, the KL between the two samplers' whole trajectories,
``Σ_t E[KL_t]`` in closed form along trajectories of the fine-tuned model. It bounds the
KL between their ``x_0`` marginals from above, and equals it at the optimum (``p*``'s trajectories given
``x_0`` are the reference's), so comparing it with :func:`kl_optimum`'s KL is conservative. A method that
does not regularise the trajectories (RWR fits ``x_0`` only) can sit near ``p*`` with a much larger trajectory
KL (measured on the ring: 2.7x the optimum's for RWR, whose output KL is 1.25x), which is why the output KL is
the one reported where it can be estimated.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from rlcore.adapters.diffusion.sampling import Trajectory, predict_noise, rollout
from rlcore.adapters.diffusion.steps import GaussianSteps
from rlcore.adapters.diffusion.trainable import make_trainable
from rlcore.networks.embeddings import timestep_embedding
from rlcore.objectives import clipped_pg_loss, normalize_advantages, rwr_weights, value_loss

METHODS = ("dpok", "ppo", "rwr", "fpg")
Method = Literal["dpok", "ppo", "rwr", "fpg"]


@dataclass
class FinetuneConfig:
    """Settings of :func:`finetune` (the method's own are ignored by the others)."""

    batch_size: int = 256
    """Trajectories sampled per iteration (RWR: reference samples per step)."""
    num_inference_steps: int = 20
    """Gaussian steps per trajectory."""
    learning_rate: float = 3e-4
    """Adam step size of the denoiser."""
    update_epochs: int = 2
    """PPO-style passes over each batch of trajectories (dpok, ppo, fpg)."""
    clip_coef: float = 0.1
    """Clipping ε of the per-step probability ratio."""
    max_grad_norm: float = 1.0
    """Global gradient-norm clip."""
    divergence: Literal["kl", "reverse_kl", "chi2"] = "kl"
    """fpg's f-divergence."""
    pretrain_weight: float = 0.0
    """rwr: weight of the unweighted denoising loss (Lee et al.'s λ)."""
    rwr_samples: int = 16_384
    """rwr: reference samples scored once (the fixed data set)."""
    value_learning_rate: float = 1e-3
    """dpok: Adam step size of the value baseline."""
    eval_samples: int = 4_096
    """Samples for the final reward and KL estimates."""
    trainable: Literal["full", "lora", "side"] = "full"
    """What trains: the whole model, LoRA adapters, or DiffCon's side network (:mod:`.trainable`)."""
    lora_rank: int = 4
    """Rank of the LoRA adapters (DPOK's 4)."""
    side_hidden: int = 64
    """Width of the side network's control."""


@dataclass
class FinetuneResult:
    """A fine-tuned denoiser with its frozen reference, and how training went."""

    model: nn.Module
    reference: nn.Module
    scheduler: Any
    steps: GaussianSteps
    method: str
    kl_weight: float
    history: list[dict[str, float]] = field(default_factory=list)
    trainable_parameters: int = 0
    """Parameters that took a gradient."""
    kl_to_reference: float = float("nan")
    """The estimated ``KL(p_θ(x_0) ‖ p_ref(x_0))`` of the samplers' outputs: :attr:`marginal_kl` for samples of at
    most 8 dimensions, else :attr:`trajectory_kl` (an upper bound; see the module docstring)."""
    trajectory_kl: float = float("nan")
    """The closed-form KL between the two samplers' trajectories (bounds the output KL from above)."""
    marginal_kl: float = float("nan")
    """The k-NN estimate (:func:`knn_kl`) of the output KL, for samples of at most 8 dimensions (else NaN)."""
    expected_reward: float = float("nan")
    """Mean reward of ``eval_samples`` samples of the fine-tuned model."""
    held_out_reward: float = float("nan")
    """Mean held-out (monitor) reward of the same samples (NaN without one)."""
    seconds: float = 0.0

    def sample(self, n: int, seed: int = 0, condition: Any = None) -> torch.Tensor:
        """``[n, ...]`` samples of the fine-tuned model."""
        shape = (n, *self._shape)
        return rollout(self.model, self.steps, shape, torch.Generator().manual_seed(int(seed)), condition).samples

    _shape: tuple[int, ...] = (2,)


@dataclass
class KLOptimum:
    """The exact optimum ``p* ∝ p_ref exp(r/β)`` of the KL-regularised problem, estimated by sampling ``p_ref``."""

    expected_reward: float
    kl: float
    reference_reward: float
    num_samples: int


@torch.no_grad()
def kl_optimum(bed: Any, reward_fn: Callable[[torch.Tensor], torch.Tensor], kl_weight: float,
               num_samples: int = 200_000, seed: int = 12_345) -> KLOptimum:
    """``E_{p*}[r]`` and ``KL(p* ‖ p_ref)`` for the reference sampler of ``bed`` (see the module docstring)."""
    if not kl_weight > 0:
        raise ValueError(f"kl_weight must be > 0 (β of p* ∝ p_ref exp(r/β)), got {kl_weight!r}.")
    x = bed.sample(num_samples, seed=seed)
    r = _rewards(reward_fn, x).double()
    z = r / kl_weight
    log_mean_exp = torch.logsumexp(z, 0) - math.log(num_samples)
    w = torch.softmax(z, 0)
    expected = float((w * r).sum())
    return KLOptimum(expected, float(expected / kl_weight - log_mean_exp), float(r.mean()), num_samples)


@torch.no_grad()
def knn_kl(p_samples: torch.Tensor, q_samples: torch.Tensor, k: int = 5) -> float:
    """The k-nearest-neighbour estimate of ``KL(P ‖ Q)`` from samples (Wang, Kulkarni and Verdú, 2009):

        D̂ = d/n Σ_i log(ν_k(i) / ρ_k(i)) + log(m / (n − 1))

    with ``ρ_k(i)`` the distance from ``x_i ~ P`` to its k-th neighbour among the other P samples and ``ν_k(i)``
    to its k-th neighbour among the ``m`` Q samples. Consistent, and good in a few dimensions (the ring's two).
    """
    x, y = p_samples.flatten(1).double(), q_samples.flatten(1).double()
    n, d = x.shape
    rho = torch.cdist(x, x).fill_diagonal_(float("inf")).kthvalue(k, dim=1).values
    nu = torch.cdist(x, y).kthvalue(k, dim=1).values
    return float(d * torch.log(nu / rho).mean() + math.log(y.shape[0] / (n - 1)))


def _rewards(reward_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    r = reward_fn(x)
    if not isinstance(r, torch.Tensor) or r.shape != (x.shape[0],):
        got = tuple(r.shape) if isinstance(r, torch.Tensor) else type(r).__name__
        raise ValueError(f"reward_fn must map [N, ...] samples to an [N] tensor, got {got} for N = {x.shape[0]}.")
    if not torch.isfinite(r).all():
        raise ValueError("reward_fn returned NaN or infinite rewards.")
    return r.detach().float()


class ValueBaseline(nn.Module):
    """DPOK's value ``V(x_t, t)`` of a state of the reverse process (the expected final reward)."""

    def __init__(self, dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 32, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x.flatten(1), timestep_embedding(t)], 1)).squeeze(1)


def _step_terms(model: nn.Module, reference: nn.Module, steps: GaussianSteps, traj: Trajectory, i: int,
                kl_weight: float, divergence: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log π_θ(x_{i+1} | x_i) [N], regulariser [N])`` of step ``i`` with gradients."""
    x_t, x_next = traj.states[i], traj.states[i + 1]
    t = int(steps.timesteps[i])
    mean = steps.mean(x_t, predict_noise(model, x_t, t, traj.condition), i)
    log_prob = steps.log_prob(x_next, mean, i)
    if kl_weight == 0:
        return log_prob, torch.zeros_like(log_prob)
    with torch.no_grad():
        ref_mean = steps.mean(x_t, predict_noise(reference, x_t, t, traj.condition), i)
    if divergence is None:  # closed-form KL
        return log_prob, steps.kl(mean, ref_mean, i)
    return log_prob, steps.divergence(mean, ref_mean, i, divergence)


def _denoising_loss(model: nn.Module, x0: torch.Tensor, alpha_bar: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """DDPM's ε-prediction loss at random timesteps."""
    t = torch.randint(alpha_bar.shape[0], (x0.shape[0],), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    a = alpha_bar[t].reshape(-1, *[1] * (x0.dim() - 1))
    return (predict_noise(model, a.sqrt() * x0 + (1 - a).sqrt() * eps, t) - eps).pow(2).mean()


def finetune(model: nn.Module, scheduler: Any, reward_fn: Callable[[torch.Tensor], torch.Tensor],
             method: str = "dpok", kl_weight: float = 0.1, steps: int = 300, seed: int = 0,
             config: FinetuneConfig | None = None, sample_shape: tuple[int, ...] = (2,),
             progress: bool = False,
             held_out_reward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> FinetuneResult:
    """Fine-tune a copy of ``model`` to maximise ``reward_fn`` with ``kl_weight`` × a divergence to ``model``.

    Args:
        model: the pretrained ε-denoiser (left unchanged: a copy is trained, the original is the reference).
        scheduler: its ``diffusers`` ``DDPMScheduler`` or ``DDIMScheduler`` (eta 1).
        reward_fn: ``[N, ...]`` samples to ``[N]`` rewards, on the samples' device.
        method: ``"dpok"``, ``"ppo"``, ``"rwr"`` or ``"fpg"`` (see the module docstring).
        kl_weight: β.
        steps: iterations (sampled batches; for rwr, gradient steps).
        seed: seed of the sampling, the minibatches and the value network.
        config: other settings (:class:`FinetuneConfig`).
        sample_shape: the shape of one sample (``(2,)`` for the ring).
        progress: show a progress bar.
        held_out_reward: the reward-hacking monitor: a second reward that is never optimised (for example a
            classifier trained on a disjoint split), scored on the same samples and logged beside ``reward_fn``
            and the KL in ``history`` and in :attr:`FinetuneResult.held_out_reward`, so that a gap between the
            optimised and the held-out reward is a number.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}; got {method!r}.")
    if not kl_weight >= 0 or (method == "rwr" and not kl_weight > 0):
        raise ValueError(f"kl_weight must be >= 0 (> 0 for rwr, the temperature of its weights), got {kl_weight!r}.")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}.")
    c = config or FinetuneConfig()
    start = time.perf_counter()
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    with torch.random.fork_rng(devices=[]):  # new layers (LoRA, side network) are seeded, the global RNG untouched
        torch.manual_seed(int(seed))
        policy = make_trainable(copy.deepcopy(model), c.trainable, c.lora_rank, c.side_hidden).train()
    params = [p for p in policy.parameters() if p.requires_grad]
    gsteps = GaussianSteps.from_scheduler(scheduler, c.num_inference_steps)
    optimizer = torch.optim.Adam(params, lr=c.learning_rate)
    g = torch.Generator().manual_seed(int(seed))
    shape = (c.batch_size, *sample_shape)
    history: list[dict[str, float]] = []
    from tqdm.auto import tqdm

    bar = tqdm(range(steps), desc=f"finetune {method}", disable=not progress, leave=False)
    if method == "rwr":
        data = rollout(reference, gsteps, (c.rwr_samples, *sample_shape), g).samples
        # softmax(r/β) over the whole data set (the weights of p* ∝ p_ref exp(r/β)), applied by resampling: a
        # minibatch drawn in proportion to the weights has the weighted loss's expectation at far less variance
        # than weighting a uniform minibatch whose few high-reward samples carry all the weight.
        weights = rwr_weights(_rewards(reward_fn, data), kl_weight)
        ess = float(weights.sum() ** 2 / weights.pow(2).sum())
        alpha_bar = scheduler.alphas_cumprod.float()
        for it in bar:
            rows = torch.multinomial(weights, c.batch_size, replacement=True, generator=g)
            loss = _denoising_loss(policy, data[rows], alpha_bar, g)
            if c.pretrain_weight > 0:
                uniform = torch.randint(c.rwr_samples, (c.batch_size,), generator=g)
                loss = loss + c.pretrain_weight * _denoising_loss(policy, data[uniform], alpha_bar, g)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, c.max_grad_norm)
            optimizer.step()
            if it % 50 == 0 or it == steps - 1:
                record = {"step": it, "loss": float(loss.detach()), "ess": ess}
                if held_out_reward is not None:
                    with torch.no_grad():
                        probe = rollout(policy.eval(), gsteps, shape, torch.Generator().manual_seed(int(seed) + it))
                    policy.train()
                    record.update(reward=float(_rewards(reward_fn, probe.samples).mean()),
                                  held_out_reward=float(_rewards(held_out_reward, probe.samples).mean()))
                history.append(record)
    else:
        value = ValueBaseline(int(torch.Size(sample_shape).numel())) if method == "dpok" else None
        value_opt = torch.optim.Adam(value.parameters(), lr=c.value_learning_rate) if value is not None else None
        divergence = c.divergence if method == "fpg" else None
        s_count = gsteps.num_steps
        for it in bar:
            policy.eval()
            traj = rollout(policy, gsteps, shape, g, reference=reference if kl_weight > 0 else None)
            policy.train()
            r = _rewards(reward_fn, traj.samples)
            times = gsteps.timesteps
            if value is not None:
                states = traj.states[:-1].flatten(0, 1)
                step_t = times.repeat_interleave(c.batch_size)
                with torch.no_grad():
                    advantages = (r[None, :] - value(states, step_t).reshape(s_count, -1))
                v_loss, _ = value_loss(value(states, step_t), r.repeat(s_count))
                value_opt.zero_grad(set_to_none=True)
                v_loss.backward()
                value_opt.step()
            elif method == "ppo":  # DDPO: normalised returns (its KL weight is then relative to them)
                advantages = normalize_advantages(r)[None, :].expand(s_count, -1)
            else:  # the batch mean as the baseline: advantages stay in reward units, so β weighs the KL exactly
                advantages = (r - r.mean())[None, :].expand(s_count, -1)
            for _ in range(c.update_epochs):
                order = torch.randperm(s_count, generator=g).tolist()
                for i in order:  # one minibatch per denoising step: the batch's transitions at that step
                    log_prob, reg = _step_terms(policy, reference, gsteps, traj, i, kl_weight, divergence)
                    pg, _ = clipped_pg_loss(log_prob, traj.log_probs[i], advantages[i], c.clip_coef)
                    loss = pg + kl_weight * reg.mean()
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    nn.utils.clip_grad_norm_(params, c.max_grad_norm)
                    optimizer.step()
            if it % 10 == 0 or it == steps - 1:
                record = {"step": it, "reward": float(r.mean()), "kl": float(traj.kl.sum(0).mean())}
                if held_out_reward is not None:
                    record["held_out_reward"] = float(_rewards(held_out_reward, traj.samples).mean())
                history.append(record)
                bar.set_postfix(reward=f"{float(r.mean()):.3f}", kl=f"{float(traj.kl.sum(0).mean()):.3f}")
    policy.eval().requires_grad_(False)
    result = FinetuneResult(policy, reference, scheduler, gsteps, method, float(kl_weight), history,
                            sum(p.numel() for p in params))
    result._shape = tuple(sample_shape)
    final = rollout(policy, gsteps, (c.eval_samples, *sample_shape), torch.Generator().manual_seed(int(seed) + 1),
                    reference=reference)
    result.trajectory_kl = result.kl_to_reference = float(final.kl.sum(0).mean())
    if final.samples[0].numel() <= 8:
        ref = rollout(reference, gsteps, (c.eval_samples, *sample_shape), torch.Generator().manual_seed(int(seed) + 2))
        result.marginal_kl = result.kl_to_reference = knn_kl(final.samples, ref.samples)
    result.expected_reward = float(_rewards(reward_fn, final.samples).mean())
    if held_out_reward is not None:
        result.held_out_reward = float(_rewards(held_out_reward, final.samples).mean())
    result.seconds = time.perf_counter() - start
    return result


__all__ = ["METHODS", "FinetuneConfig", "FinetuneResult", "KLOptimum", "ValueBaseline", "finetune", "kl_optimum",
           "knn_kl"]
