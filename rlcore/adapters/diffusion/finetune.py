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

**Conditions** (``conditions=``): each sample's prompt is drawn from the given ones (class labels of a
``UNet2DModel``, embeddings of a ``UNet2DConditionModel``) and the reward reads it, ``reward_fn(x_0, c)``;
PPO normalises advantages per prompt (DDPO) and RWR's weights are a softmax per prompt, so that
``p*(x | c) ∝ p_ref(x | c) exp(r(x, c)/β)`` keeps every prompt's share.

**Focus-N-Fix** (``region=``, region-aware fixing after Xing et al.): given a per-pixel deficiency map
``M`` of the original model's sample, the update should change the sample inside ``M`` and nothing outside
it. Each step's Gaussian factorises over pixels given ``x_t``, so the policy gradient can be restricted
exactly: the ratio and the log-prob are those of the region's pixels, ``log π_M = Σ_{p ∈ M} log N(x'_p;
μ_p, σ²)``, whose gradient never reaches the mean outside ``M``, and the preservation loss is the
closed-form KL of the pixels outside it, ``Σ_{p ∉ M} (μ_p − μ_ref,p)² / 2σ²``: zero exactly when the
fine-tuned step's mean equals the original's there, which for the same noise keeps the output there equal
to the original's. Each batch is sampled by the reference and by the model with the same noise; the
reference's sample gives ``M``, the model's the reward.

**A KL budget** (``FinetuneConfig(kl_target=ε)``): β starts at ``kl_weight`` and is adapted by dual ascent on
``max E[r] s.t. KL <= ε`` (:mod:`~rlcore.adapters.diffusion.kl_control`), from probes of the same KL that
:attr:`FinetuneResult.kl_to_reference` reports; with ``kl_strict=True`` the budget is a hard limit: after
training, the update is shrunk towards the pretrained weights (``θ0 + α (θ − θ0)``) until a probe's KL is
within it.

**The exact optimum** (spec section 0): the maximiser of ``E_p[r] − β KL(p ‖ p_ref)`` is
``p* ∝ p_ref exp(r/β)``, with ``E_{p*}[r] = E_ref[r e^{r/β}] / E_ref[e^{r/β}]`` and
``KL(p* ‖ p_ref) = E_{p*}[r]/β − log E_ref[e^{r/β}]``, estimated to high precision by sampling the
reference (:func:`kl_optimum`).

**KL of the fine-tuned sampler** (:attr:`FinetuneResult.kl_to_reference`): for samples of a few dimensions
the nearest-neighbour estimate of the KL between the two samplers' outputs (:func:`knn_kl`; ``eval_samples``
of the fine-tuned model against ``kl_reference_samples`` of the reference, eight times as many by default:
with as many of each it read 7 % low on the ring, measured against a density-ratio classifier), else
:attr:`FinetuneResult.trajectory_kl`, the KL between the two samplers' whole trajectories,
``Σ_t E[KL_t]`` in closed form along trajectories of the fine-tuned model. It bounds the
KL between their ``x_0`` marginals from above, and equals it at the optimum (``p*``'s trajectories given
``x_0`` are the reference's), so comparing it with :func:`kl_optimum`'s KL is conservative. A method that
does not regularise the trajectories (RWR fits ``x_0`` only) can sit near ``p*`` with a much larger trajectory
KL (measured on the ring: 2.7x the optimum's for RWR, whose output KL is 1.31x), which is why the output KL is
the one reported where it can be estimated.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from rlcore.adapters.diffusion.kl_control import KLController
from rlcore.adapters.diffusion.sampling import Trajectory, predict_noise, rollout
from rlcore.adapters.diffusion.steps import GaussianSteps
from rlcore.adapters.diffusion.trainable import make_trainable
from rlcore.loops.checkpoint import CHECKPOINT, load_latest_checkpoint, save_checkpoint
from rlcore.loops.run_dir import locks_run_dir
from rlcore.networks.embeddings import timestep_embedding
from rlcore.objectives import clipped_pg_loss, normalize_advantages, rwr_weights, value_loss

METHODS = ("dpok", "ppo", "rwr", "fpg")
Method = Literal["dpok", "ppo", "rwr", "fpg"]


@dataclass
class FinetuneConfig:
    """Settings of `finetune` (the method's own are ignored by the others)."""

    batch_size: int = 256
    """Trajectories sampled per iteration (RWR: reference samples per step)."""
    num_inference_steps: int = 20
    """Gaussian steps per trajectory."""
    learning_rate: float = 3e-4
    """Adam step size of the denoiser."""
    lr_decay_fraction: float | None = None
    """The last share of the iterations over which the step size falls linearly to 0 (0: constant; None: 0.3
    under a KL budget, ``kl_target``, else 0). The last iterate of a noisy policy gradient wanders: on the ring
    under a KL budget, 1,024-sample KL probes of one run moved by 10-20 % from one probe to the next (the
    estimator's own spread on a fixed model: 3 %), so with a constant step size the final KL was wherever the
    last steps took it; decaying over the last 30 % lifted every method's share of the way to the optimum on
    seed 0 from 0.89-0.90 to 0.91-0.96 at the same budget."""
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
    kl_reference_samples: int = 32_768
    """Samples of the reference that every k-NN KL estimate (`knn_kl`: the final one, the budget's probes
    and ``kl_strict``'s check) compares against. Many more than the fine-tuned side's: the estimate reads low when
    fine-tuning moves mass into the reference's tails, where few reference samples fall. Measured on the ring
    (DPOK under a KL budget, against a density-ratio classifier on 200,000 samples per side): 4,096 reference
    samples read 0.93x the KL, 32,768 read 0.99x."""
    trainable: Literal["full", "lora", "side"] = "full"
    """What trains: the whole model, LoRA adapters, or DiffCon's side network (`.trainable`)."""
    lora_rank: int = 4
    """Rank of the LoRA adapters (DPOK's 4)."""
    side_hidden: int = 64
    """Width of the side network's control."""
    preserve_weight: float = 1.0
    """Focus-N-Fix (``region=``): weight of the closed-form KL outside the region (the preservation loss)."""
    log_every: int = 10
    """Iterations between logged records (``history`` and TensorBoard)."""
    image_every: int = 50
    """Iterations between sample grids in TensorBoard (images only)."""
    checkpoint_every: int = 25
    """Iterations between checkpoints (with ``run_dir``)."""
    kl_target: float | None = None
    """A KL budget instead of a fixed weight: β starts at ``kl_weight`` and is adapted
    (`KLController`) so that the KL to the reference, the one
    `FinetuneResult.kl_to_reference` reports, approaches this value. None: β stays ``kl_weight``."""
    kl_adapt_rate: float = 0.3
    """With ``kl_target``: the step on ``log β`` per unit of ``log(KL / kl_target)``."""
    kl_probe_every: int = 5
    """With ``kl_target``: iterations between KL measurements (each one sampler rollout)."""
    kl_probe_samples: int = 1024
    """With ``kl_target``: samples per KL measurement (for samples of more than 8 dimensions, whose KL is the
    closed-form trajectory KL, ``batch_size``)."""
    kl_strict: bool = False
    """With ``kl_target``: make the budget a hard limit. After training, if the measured KL exceeds the target,
    the trainable weights are moved back towards their initial values (``θ0 + α (θ − θ0)``, α by bisection)
    until it does not, measured on ``eval_samples`` samples (drawn apart from the final estimate's);
    `FinetuneResult.update_kept` is the α used. The checkpoint keeps the trained weights, so a resumed run
    trains on from them."""


@dataclass
class FinetuneResult:
    """A fine-tuned denoiser with its frozen reference, and how training went."""

    model: nn.Module
    reference: nn.Module
    scheduler: Any
    steps: GaussianSteps
    method: str
    kl_weight: float
    """β at the end (with ``config.kl_target``, the adapted value; else the given ``kl_weight``)."""
    history: list[dict[str, float]] = field(default_factory=list)
    trainable_parameters: int = 0
    """Parameters that took a gradient."""
    kl_to_reference: float = float("nan")
    """The estimated ``KL(p_θ(x_0) ‖ p_ref(x_0))`` of the samplers' outputs: `marginal_kl` for samples of at
    most 8 dimensions, else `trajectory_kl` (an upper bound; see the module docstring)."""
    trajectory_kl: float = float("nan")
    """The closed-form KL between the two samplers' trajectories (bounds the output KL from above)."""
    marginal_kl: float = float("nan")
    """The k-NN estimate (`knn_kl`) of the output KL, for samples of at most 8 dimensions (else NaN)."""
    expected_reward: float = float("nan")
    """Mean reward of ``eval_samples`` samples of the fine-tuned model."""
    held_out_reward: float = float("nan")
    """Mean held-out (monitor) reward of the same samples (NaN without one)."""
    seconds: float = 0.0
    sample_shape: tuple[int, ...] = (2,)
    """The shape of one sample."""
    update_kept: float = 1.0
    """With ``FinetuneConfig(kl_strict=True)``: the share α of the fine-tuning update kept to stay within the KL
    budget (1: all of it)."""
    conditions: torch.Tensor | None = None
    """The conditions it was fine-tuned on (None: unconditional); `sample` cycles through them by default."""

    def _condition(self, n: int, condition: Any) -> Any:
        if condition is None and self.conditions is not None:
            return _in_turn(self.conditions, n)
        return condition

    def sample(self, n: int, seed: int = 0, condition: Any = None) -> torch.Tensor:
        """``[n, *sample_shape]`` samples of the fine-tuned model (``condition``: one per sample; default: the
        fine-tuning conditions in turn)."""
        return rollout(self.model, self.steps, (n, *self.sample_shape), torch.Generator().manual_seed(int(seed)),
                       self._condition(n, condition)).samples

    def sample_pair(self, n: int, seed: int = 0, condition: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(fine-tuned, reference)`` samples drawn with the same noise, so that what fine-tuning changed in each
        sample is their difference."""
        condition = self._condition(n, condition)
        shape = (n, *self.sample_shape)
        return tuple(rollout(m, self.steps, shape, torch.Generator().manual_seed(int(seed)), condition).samples
                     for m in (self.model, self.reference))  # type: ignore[return-value]


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


def _in_turn(conditions: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` conditions cycling through ``conditions``."""
    return conditions[torch.arange(n) % len(conditions)]


KNN_NEIGHBOURS = 5
"""k of :func:`knn_kl` as the fine-tuning estimates use it."""

BUDGET_LR_DECAY_FRACTION = 0.3
"""``FinetuneConfig.lr_decay_fraction``'s value under a KL budget when it is left at None."""


@torch.no_grad()
def knn_kl(p_samples: torch.Tensor, q_samples: torch.Tensor, k: int = KNN_NEIGHBOURS, chunk: int = 512) -> float:
    """The k-nearest-neighbour estimate of ``KL(P ‖ Q)`` from samples (Wang, Kulkarni and Verdú, 2009):

        D̂ = d/n Σ_i log(ν_k(i) / ρ_k(i)) + log(m / (n − 1))

    with ``ρ_k(i)`` the distance from ``x_i ~ P`` to its k-th neighbour among the other P samples and ``ν_k(i)``
    to its k-th neighbour among the ``m`` Q samples. Consistent, and good in a few dimensions (the ring's two),
    but biased low where P has mass in Q's tails and few Q samples fall there: give Q many more samples than P
    (:attr:`FinetuneConfig.kl_reference_samples`). Distances are computed ``chunk`` rows of P at a time, so that
    memory stays ``chunk × m``.
    """
    x, y = p_samples.flatten(1).double(), q_samples.flatten(1).double()
    n, d = x.shape
    if n <= k or y.shape[0] < k:
        raise ValueError(f"knn_kl needs more than k = {k} samples of P and at least k of Q, got {n} and "
                         f"{y.shape[0]}.")
    rho, nu = [], []
    for start in range(0, n, chunk):
        rows = x[start:start + chunk]
        to_p = torch.cdist(rows, x)
        to_p[torch.arange(len(rows)), torch.arange(start, start + len(rows))] = float("inf")  # not itself
        rho.append(to_p.kthvalue(k, dim=1).values)
        nu.append(torch.cdist(rows, y).kthvalue(k, dim=1).values)
    return float(d * torch.log(torch.cat(nu) / torch.cat(rho)).mean() + math.log(y.shape[0] / (n - 1)))


@torch.no_grad()
def _reference_samples(reference: nn.Module, gsteps: GaussianSteps, n: int, sample_shape: Sequence[int],
                       conditions: torch.Tensor | None, seed: int) -> torch.Tensor:
    """``n`` samples of the frozen reference with their own generator, the conditions in turn: the Q side of a
    k-NN KL estimate."""
    condition = None if conditions is None else _in_turn(conditions, n)
    return rollout(reference, gsteps, (n, *sample_shape), torch.Generator().manual_seed(int(seed)), condition).samples


def _rewards(reward_fn: Callable[..., torch.Tensor], x: torch.Tensor, condition: Any = None) -> torch.Tensor:
    r = reward_fn(x) if condition is None else reward_fn(x, condition)
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
                kl_weight: float, divergence: str | None, region: torch.Tensor | None = None,
                preserve_weight: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log π_θ(x_{i+1} | x_i) [N], weighted regulariser [N])`` of step ``i`` with gradients.

    With a ``region`` (Focus-N-Fix): the log-prob of the region's pixels only, ``kl_weight`` × the divergence
    inside it and ``preserve_weight`` × the closed-form KL outside it."""
    x_t, x_next = traj.states[i], traj.states[i + 1]
    t = int(steps.timesteps[i])
    mean = steps.mean(x_t, predict_noise(model, x_t, t, traj.condition), i)
    log_prob = steps.log_prob(x_next, mean, i, mask=region)
    if kl_weight == 0 and region is None:
        return log_prob, torch.zeros_like(log_prob)
    with torch.no_grad():
        ref_mean = steps.mean(x_t, predict_noise(reference, x_t, t, traj.condition), i)
    if region is not None:
        inside = steps.kl(mean, ref_mean, i, mask=region)
        if divergence == "chi2":
            inside = torch.expm1(2 * inside)
        return log_prob, kl_weight * inside + preserve_weight * steps.kl(mean, ref_mean, i, mask=~region)
    if divergence is None:  # closed-form KL
        return log_prob, kl_weight * steps.kl(mean, ref_mean, i)
    return log_prob, kl_weight * steps.divergence(mean, ref_mean, i, divergence)


def region_log_probs(steps: GaussianSteps, traj: Trajectory, region: torch.Tensor) -> torch.Tensor:
    """``[S, N]`` the sampling model's log-probs of the region's pixels at every step, from the stored noise
    (``x' − μ = σ · noise``), for the ratio of the region-restricted policy gradient."""
    count = region.flatten(1).sum(1).float()
    out = []
    for i in range(steps.num_steps):
        sq = (traj.noise[i].pow(2) * region).flatten(1).sum(1)
        out.append(-0.5 * sq - count * (torch.log(steps.std[i]) + 0.5 * math.log(2 * math.pi)))
    return torch.stack(out)


def _is_labels(condition: Any) -> bool:
    """Whether ``condition`` is a batch of integer class labels (whose equal values group samples by prompt)."""
    return isinstance(condition, torch.Tensor) and condition.dim() == 1 and not condition.is_floating_point()


def _per_condition_normalised(r: torch.Tensor, condition: Any) -> torch.Tensor:
    """DDPO's per-prompt advantage normalisation for integer-label conditions, else the batch's."""
    if not _is_labels(condition):
        return normalize_advantages(r)
    out = torch.empty_like(r)
    for value in condition.unique():
        rows = condition == value
        group = r[rows]
        out[rows] = (group - group.mean()) / (group.std(unbiased=False) + 1e-8) if rows.sum() > 1 else 0.0
    return out


def _draw_conditions(conditions: torch.Tensor | None, n: int, g: torch.Generator) -> torch.Tensor | None:
    if conditions is None:
        return None
    return conditions[torch.randint(len(conditions), (n,), generator=g)]


def _rwr_weights_and_ess(r: torch.Tensor, kl_weight: float, condition: Any) -> tuple[torch.Tensor, float]:
    """:func:`_rwr_weights` and their effective sample size ``(Σw)² / Σw²`` (logged)."""
    weights = _rwr_weights(r, kl_weight, condition)
    return weights, float(weights.sum() ** 2 / weights.pow(2).sum())


def _rwr_weights(r: torch.Tensor, kl_weight: float, condition: Any) -> torch.Tensor:
    """softmax(r/β) over the data set, per condition for integer labels (``p*(x|c) ∝ p_ref(x|c) e^{r(x,c)/β}``
    keeps each condition's share of the data)."""
    if not _is_labels(condition):
        return rwr_weights(r, kl_weight)
    weights = torch.empty_like(r)
    for value in condition.unique():
        rows = condition == value
        weights[rows] = rwr_weights(r[rows], kl_weight) * rows.float().mean()
    return weights


def _denoising_loss(model: nn.Module, x0: torch.Tensor, alpha_bar: torch.Tensor, g: torch.Generator,
                    condition: Any = None) -> torch.Tensor:
    """DDPM's ε-prediction loss at random timesteps."""
    t = torch.randint(alpha_bar.shape[0], (x0.shape[0],), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    a = alpha_bar[t].reshape(-1, *[1] * (x0.dim() - 1))
    return (predict_noise(model, a.sqrt() * x0 + (1 - a).sqrt() * eps, t, condition) - eps).pow(2).mean()


def _check_conditions(conditions: Any) -> torch.Tensor | None:
    if conditions is None:
        return None
    if not isinstance(conditions, torch.Tensor) or conditions.dim() < 1 or len(conditions) == 0:
        got = f"shape {list(conditions.shape)}" if isinstance(conditions, torch.Tensor) else type(conditions).__name__
        raise ValueError(f"conditions must be a non-empty tensor of conditions (class labels [M], or embeddings "
                         f"[M, ...]) that batches are drawn from, got {got}.")
    return conditions


def _region_mask(region: Callable[..., torch.Tensor], x0: torch.Tensor, condition: Any) -> torch.Tensor:
    mask = region(x0) if condition is None else region(x0, condition)
    if not isinstance(mask, torch.Tensor) or mask.shape != x0.shape:
        got = list(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"region must map [N, ...] samples to a per-element deficiency map of the same shape "
                         f"{list(x0.shape)} (bool, or probabilities thresholded at 0.5), got {got}.")
    return mask if mask.dtype == torch.bool else mask > 0.5


def _trainable_state(policy: nn.Module) -> dict[str, torch.Tensor]:
    """The weights that train (the frozen backbone is rebuilt from the pretrained model on resume)."""
    names = {name for name, p in policy.named_parameters() if p.requires_grad}
    return {k: v.clone() for k, v in policy.state_dict().items() if k in names}


def _save_state(run_dir: str | Path, settings: dict[str, Any], iteration: int, policy: nn.Module,
                optimizer: torch.optim.Optimizer, value: nn.Module | None, value_opt: torch.optim.Optimizer | None,
                g: torch.Generator, history: list[dict[str, float]], beta: float) -> None:
    agent = {"policy": _trainable_state(policy), "optimizer": optimizer.state_dict(), "beta": beta,
             "value": None if value is None else value.state_dict(),
             "value_optimizer": None if value_opt is None else value_opt.state_dict(), "history": list(history)}
    save_checkpoint(Path(run_dir) / CHECKPOINT, {"config": settings, "step": iteration, "agent": agent,
                                                 "rng": {"generator": g.get_state()}})


def _load_state(run_dir: str | Path, settings: dict[str, Any]) -> dict[str, Any]:
    saved = load_latest_checkpoint(run_dir)
    for key, value in settings.items():
        if saved["config"].get(key) != value:
            raise ValueError(f"cannot resume {run_dir}: its {key} is {saved['config'].get(key)!r}, this call's is "
                             f"{value!r}; resume with the run's own settings (only steps may change).")
    return saved


def _restore(saved: dict[str, Any], policy: nn.Module, optimizer: torch.optim.Optimizer, value: nn.Module | None,
             value_opt: torch.optim.Optimizer | None, g: torch.Generator, history: list[dict[str, float]]
             ) -> tuple[int, float | None]:
    """Loads the checkpoint into the given objects; returns its iteration and β (None if it kept none)."""
    agent = saved["agent"]
    missing = set(_trainable_state(policy)) - set(agent["policy"])
    if missing:
        raise ValueError(f"the checkpoint lacks trainable weights {sorted(missing)[:3]}...; it is of another model.")
    policy.load_state_dict(agent["policy"], strict=False)
    optimizer.load_state_dict(agent["optimizer"])
    if value is not None:
        value.load_state_dict(agent["value"])
        value_opt.load_state_dict(agent["value_optimizer"])
    g.set_state(saved["rng"]["generator"])
    history.extend(agent["history"])
    return int(saved["step"]), agent.get("beta")


class _Logger:
    """TensorBoard scalars and sample grids of a fine-tuning run (``log_dir=None``: nothing is written)."""

    def __init__(self, log_dir: str | Path | None, image_every: int, purge_step: int | None = None) -> None:
        self.writer = None
        self.image_every = image_every
        if log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            # A resumed run drops the events logged after its checkpoint, which it logs again.
            self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)

    def scalars(self, record: dict[str, float]) -> None:
        if self.writer is not None:
            for key, value in record.items():
                if key != "step":
                    self.writer.add_scalar(f"finetune/{key}", value, record["step"])

    def samples(self, x: torch.Tensor, step: int, force: bool = False) -> None:
        """A grid of at most 64 samples when they are images (``[N, 1 or 3, H, W]``), every ``image_every``."""
        if self.writer is None or x.dim() != 4 or x.shape[1] not in (1, 3):
            return
        if force or step % self.image_every == 0:
            self.writer.add_images("finetune/samples", ((x[:64].clamp(-1, 1) + 1) / 2), step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@locks_run_dir  # one process at a time in a run directory
def finetune(model: nn.Module, scheduler: Any, reward_fn: Callable[..., torch.Tensor],
             method: str = "dpok", kl_weight: float = 0.1, steps: int = 300, seed: int = 0,
             config: FinetuneConfig | None = None, sample_shape: tuple[int, ...] = (2,),
             progress: bool = False,
             held_out_reward: Callable[..., torch.Tensor] | None = None, *,
             conditions: torch.Tensor | None = None,
             region: Callable[..., torch.Tensor] | None = None,
             log_dir: str | Path | None = None,
             run_dir: str | Path | None = None, resume: bool = False) -> FinetuneResult:
    """Fine-tune a copy of ``model`` to maximise ``reward_fn`` with ``kl_weight`` × a divergence to ``model``.

    Args:
        model: the pretrained ε-denoiser (left unchanged: a copy is trained, the original is the reference).
        scheduler: its ``diffusers`` ``DDPMScheduler`` or ``DDIMScheduler`` (eta 1).
        reward_fn: ``[N, ...]`` samples to ``[N]`` rewards, on the samples' device; with ``conditions``, called
            as ``reward_fn(samples, condition)`` with the batch's ``[N, ...]`` conditions.
        method: ``"dpok"``, ``"ppo"``, ``"rwr"`` or ``"fpg"`` (see the module docstring).
        kl_weight: β (with ``config.kl_target``: its starting value).
        steps: iterations (sampled batches; for rwr, gradient steps).
        seed: seed of the sampling, the minibatches and the value network.
        config: other settings (:class:`FinetuneConfig`).
        sample_shape: the shape of one sample (``(2,)`` for the ring, ``(1, 8, 8)`` for digits).
        progress: show a progress bar.
        held_out_reward: the reward-hacking monitor: a second reward that is never optimised (for example a
            classifier trained on a disjoint split), scored on the same samples and logged beside ``reward_fn``
            and the KL in ``history`` and in :attr:`FinetuneResult.held_out_reward`, so that a gap between the
            optimised and the held-out reward is a number. Called like ``reward_fn``.
        conditions: the prompts to fine-tune on (class labels ``[M]`` for a ``UNet2DModel``, embeddings for a
            ``UNet2DConditionModel``); each sample's condition is drawn from them. None: unconditional.
        region: Focus-N-Fix (region-aware fixing, methods dpok, ppo and fpg): a per-element deficiency map
            ``region(samples[, condition]) -> [N, ...]`` (bool, or probabilities thresholded at 0.5; for example
            a trained localized reward model). Each batch is sampled twice with the same noise, by the reference
            and by the model; the reference's sample gives the region. The policy gradient then reads the
            log-prob of the region's pixels only, ``kl_weight`` weighs the divergence inside it, and
            ``config.preserve_weight`` × the closed-form per-step KL outside it keeps the output there equal to
            the original model's for the same noise (see the module docstring).
        log_dir: write TensorBoard logs there: reward, held-out reward, KL to the reference (and the region's
            share with ``region``) at every logged iteration, and grids of samples (images only).
        run_dir: keep a checkpoint there (``checkpoint.pt``, every ``config.checkpoint_every`` iterations and at
            the end, written atomically with the previous one kept) holding everything the loop needs to
            continue: the trainable weights, the optimisers, the value baseline, the generator and the history.
            TensorBoard logs go there too unless ``log_dir`` says otherwise.
        resume: continue from ``run_dir``'s checkpoint: the run then ends bit for bit as if it had not
            stopped (tested). The settings must be the checkpoint's (``steps`` may grow).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}; got {method!r}.")
    if not kl_weight >= 0 or (method == "rwr" and not kl_weight > 0):
        raise ValueError(f"kl_weight must be >= 0 (> 0 for rwr, the temperature of its weights), got {kl_weight!r}.")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}.")
    if region is not None and method == "rwr":
        raise ValueError("region (Focus-N-Fix) restricts a policy gradient to the region; use method 'dpok', 'ppo' "
                         "or 'fpg', not 'rwr'.")
    conditions = _check_conditions(conditions)
    c = config or FinetuneConfig()
    controller = None
    if c.kl_target is not None:
        if not kl_weight > 0:
            raise ValueError(f"with config.kl_target, kl_weight is β's starting value and must be > 0, got "
                             f"{kl_weight!r}.")
        if c.kl_probe_every < 1 or c.kl_probe_samples < 2:
            raise ValueError(f"kl_probe_every must be >= 1 and kl_probe_samples >= 2, got {c.kl_probe_every} and "
                             f"{c.kl_probe_samples}.")
        controller = KLController(c.kl_target, float(kl_weight), c.kl_adapt_rate)
    elif c.kl_strict:
        raise ValueError("kl_strict makes the KL budget a hard limit; give the budget too, "
                         "FinetuneConfig(kl_target=..., kl_strict=True).")
    decay_fraction = c.lr_decay_fraction if c.lr_decay_fraction is not None else (
        BUDGET_LR_DECAY_FRACTION if c.kl_target is not None else 0.0)
    if not 0.0 <= decay_fraction <= 1.0:
        raise ValueError(f"lr_decay_fraction is the share of the iterations over which the step size decays, in "
                         f"[0, 1] (or None for the default), got {c.lr_decay_fraction}.")
    if c.kl_reference_samples < 2 * KNN_NEIGHBOURS:
        raise ValueError(f"kl_reference_samples must be >= {2 * KNN_NEIGHBOURS} (the k-NN KL estimate's "
                         f"k = {KNN_NEIGHBOURS} neighbours, with room), got {c.kl_reference_samples}.")
    beta = float(kl_weight)
    if resume and run_dir is None:
        raise ValueError("resume=True continues the checkpoint in run_dir; give run_dir.")
    settings = {"method": method, "kl_weight": float(kl_weight), "seed": int(seed), "config": asdict(c),
                "sample_shape": list(sample_shape), "region": region is not None,
                "conditions": None if conditions is None else conditions.tolist()}
    if run_dir is not None and not resume and (Path(run_dir) / CHECKPOINT).exists():
        raise ValueError(f"{run_dir} already holds a fine-tuning checkpoint; continue it with resume=True or give "
                         "another run_dir. Nothing was changed.")
    saved = _load_state(run_dir, settings) if resume else None
    start = time.perf_counter()
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    with torch.random.fork_rng(devices=[]):  # new layers (LoRA, side network, value) are seeded, the global RNG
        torch.manual_seed(int(seed))           # untouched
        policy = make_trainable(copy.deepcopy(model), c.trainable, c.lora_rank, c.side_hidden).train()
        value = ValueBaseline(int(torch.Size(sample_shape).numel())) if method == "dpok" else None
    params = [p for p in policy.parameters() if p.requires_grad]
    initial = [p.detach().clone() for p in params] if c.kl_strict else []  # kl_strict interpolates towards them
    gsteps = GaussianSteps.from_scheduler(scheduler, c.num_inference_steps)
    optimizer = torch.optim.Adam(params, lr=c.learning_rate)
    g = torch.Generator().manual_seed(int(seed))
    shape = (c.batch_size, *sample_shape)
    history: list[dict[str, float]] = []
    value_opt = torch.optim.Adam(value.parameters(), lr=c.value_learning_rate) if value is not None else None
    first = 0
    if method == "rwr":  # its data set is drawn first, from the seeded generator: a resume draws it again
        data_condition = _draw_conditions(conditions, c.rwr_samples, g)
        data = rollout(reference, gsteps, (c.rwr_samples, *sample_shape), g, data_condition).samples
    if saved is not None:
        first, saved_beta = _restore(saved, policy, optimizer, value, value_opt, g, history)
        if controller is not None and saved_beta is not None:
            beta = controller.beta = float(saved_beta)
        if first > steps:
            raise ValueError(f"the checkpoint in {run_dir} is at iteration {first}, past steps={steps}.")
    logger = _Logger(log_dir if log_dir is not None else run_dir, c.image_every, purge_step=first or None)

    def save(iteration: int) -> None:
        if run_dir is not None:
            _save_state(run_dir, settings, iteration, policy, optimizer, value, value_opt, g, history, beta)

    low_dim = torch.Size(sample_shape).numel() <= 8
    kl_pool = None
    if controller is not None and low_dim:  # the reference's side of the probes' and the strict check's estimates
        kl_pool = _reference_samples(reference, gsteps, c.kl_reference_samples, sample_shape, conditions, seed + 3)

    def measure_kl(probe_seed: int, n: int) -> float:
        """The KL that ``kl_to_reference`` reports, on ``n`` samples (``batch_size`` for the trajectory KL) drawn
        with their own generator, so that training draws stay the same, against ``kl_pool``."""
        n = n if low_dim else c.batch_size
        probe_g = torch.Generator().manual_seed(probe_seed)
        with torch.no_grad():
            probe = rollout(policy.eval(), gsteps, (n, *sample_shape), probe_g,
                            _draw_conditions(conditions, n, probe_g), reference=None if low_dim else reference)
        policy.train()
        return knn_kl(probe.samples, kl_pool) if low_dim else float(probe.kl.sum(0).mean())

    def adapt_beta(iteration: int) -> float:
        """With a KL budget, every ``kl_probe_every`` iterations: measure the KL and take one dual step on β."""
        if controller is None or (iteration + 1) % c.kl_probe_every:
            return beta
        return controller.update(measure_kl(int(seed) + 7_919 * (iteration + 1), c.kl_probe_samples))

    def set_step_size(iteration: int) -> None:
        """The step size of ``iteration``, from the iteration alone, so that a resumed run takes the same."""
        decay_start = steps * (1.0 - decay_fraction)
        scale = 1.0 if iteration < decay_start else (steps - iteration) / (steps - decay_start)
        for group in optimizer.param_groups:
            group["lr"] = c.learning_rate * scale

    from tqdm.auto import tqdm

    bar = tqdm(range(first, steps), desc=f"finetune {method}", disable=not progress, leave=False,
               initial=first, total=steps)
    if method == "rwr":
        # softmax(r/β) over the whole data set (the weights of p* ∝ p_ref exp(r/β)), applied by resampling: a
        # minibatch drawn in proportion to the weights has the weighted loss's expectation at far less variance
        # than weighting a uniform minibatch whose few high-reward samples carry all the weight.
        data_rewards = _rewards(reward_fn, data, data_condition)
        weights, ess = _rwr_weights_and_ess(data_rewards, beta, data_condition)
        alpha_bar = scheduler.alphas_cumprod.float()
        for it in bar:
            set_step_size(it)
            rows = torch.multinomial(weights, c.batch_size, replacement=True, generator=g)
            loss = _denoising_loss(policy, data[rows], alpha_bar, g, _index(data_condition, rows))
            if c.pretrain_weight > 0:
                uniform = torch.randint(c.rwr_samples, (c.batch_size,), generator=g)
                loss = loss + c.pretrain_weight * _denoising_loss(policy, data[uniform], alpha_bar, g,
                                                                  _index(data_condition, uniform))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, c.max_grad_norm)
            optimizer.step()
            if it % c.log_every == 0 or it == steps - 1:
                record = {"step": it, "loss": float(loss.detach()), "ess": ess, "beta": beta}
                if held_out_reward is not None or log_dir is not None:
                    # The probe has its own generator, so that monitoring never changes what training draws.
                    probe_g = torch.Generator().manual_seed(int(seed) + it)
                    probe_condition = _draw_conditions(conditions, c.batch_size, probe_g)
                    with torch.no_grad():
                        probe = rollout(policy.eval(), gsteps, shape, probe_g, probe_condition, reference=reference)
                    policy.train()
                    record.update(reward=float(_rewards(reward_fn, probe.samples, probe_condition).mean()),
                                  kl=float(probe.kl.sum(0).mean()))
                    if held_out_reward is not None:
                        record["held_out_reward"] = float(_rewards(held_out_reward, probe.samples,
                                                                   probe_condition).mean())
                    logger.samples(probe.samples, it, force=it == steps - 1)
                history.append(record)
                logger.scalars(record)
            adapted = adapt_beta(it)
            if adapted != beta:
                beta = adapted
                weights, ess = _rwr_weights_and_ess(data_rewards, beta, data_condition)
            if (it + 1) % c.checkpoint_every == 0:
                save(it + 1)
    else:
        divergence = c.divergence if method == "fpg" else None
        s_count = gsteps.num_steps
        for it in bar:
            set_step_size(it)
            condition = _draw_conditions(conditions, c.batch_size, g)
            mask = None
            if region is not None:  # the same noise for both samplers: the reference's sample gives the region
                noise_seed = int(torch.randint(2 ** 62, (1,), generator=g))
                ref_samples = rollout(reference, gsteps, shape, torch.Generator().manual_seed(noise_seed),
                                      condition).samples
                mask = _region_mask(region, ref_samples, condition)
                sampler = torch.Generator().manual_seed(noise_seed)
            else:
                sampler = g
            policy.eval()
            traj = rollout(policy, gsteps, shape, sampler, condition,
                           reference=reference if beta > 0 or region is not None else None)
            policy.train()
            old_log_probs = traj.log_probs if mask is None else region_log_probs(gsteps, traj, mask)
            r = _rewards(reward_fn, traj.samples, condition)
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
            elif method == "ppo":  # DDPO: normalised returns, per prompt (its KL weight is then relative to them)
                advantages = _per_condition_normalised(r, condition)[None, :].expand(s_count, -1)
            else:  # the batch mean as the baseline: advantages stay in reward units, so β weighs the KL exactly
                advantages = (r - r.mean())[None, :].expand(s_count, -1)
            for _ in range(c.update_epochs):
                order = torch.randperm(s_count, generator=g).tolist()
                for i in order:  # one minibatch per denoising step: the batch's transitions at that step
                    log_prob, reg = _step_terms(policy, reference, gsteps, traj, i, beta, divergence, mask,
                                                c.preserve_weight)
                    pg, _ = clipped_pg_loss(log_prob, old_log_probs[i], advantages[i], c.clip_coef)
                    loss = pg + reg.mean()
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    nn.utils.clip_grad_norm_(params, c.max_grad_norm)
                    optimizer.step()
            if it % c.log_every == 0 or it == steps - 1:
                record = {"step": it, "reward": float(r.mean()), "kl": float(traj.kl.sum(0).mean()), "beta": beta}
                if held_out_reward is not None:
                    record["held_out_reward"] = float(_rewards(held_out_reward, traj.samples, condition).mean())
                if mask is not None:
                    record["region_share"] = float(mask.float().mean())
                history.append(record)
                logger.scalars(record)
                logger.samples(traj.samples, it, force=it == steps - 1)
                bar.set_postfix(reward=f"{float(r.mean()):.3f}", kl=f"{float(traj.kl.sum(0).mean()):.3f}")
            beta = adapt_beta(it)
            if (it + 1) % c.checkpoint_every == 0:
                save(it + 1)
    if first < steps:
        save(steps)  # the training state: a strict budget's interpolation below is applied after it
    logger.close()
    kept = 1.0
    if c.kl_strict:  # validated above: there is a budget
        # The final check is the final estimate's size, on samples of its own.
        kept = _interpolate_into_budget(params, initial, lambda: measure_kl(int(seed) + 104_729, c.eval_samples),
                                        c.kl_target)
    policy.eval().requires_grad_(False)
    result = FinetuneResult(policy, reference, scheduler, gsteps, method, beta, history,
                            sum(p.numel() for p in params), sample_shape=tuple(sample_shape), conditions=conditions,
                            update_kept=kept)
    eval_condition = result._condition(c.eval_samples, None)
    final = rollout(policy, gsteps, (c.eval_samples, *sample_shape), torch.Generator().manual_seed(int(seed) + 1),
                    eval_condition, reference=reference)
    result.trajectory_kl = result.kl_to_reference = float(final.kl.sum(0).mean())
    if final.samples[0].numel() <= 8:
        ref = _reference_samples(reference, gsteps, c.kl_reference_samples, sample_shape, conditions, seed + 2)
        result.marginal_kl = result.kl_to_reference = knn_kl(final.samples, ref)
    result.expected_reward = float(_rewards(reward_fn, final.samples, eval_condition).mean())
    if held_out_reward is not None:
        result.held_out_reward = float(_rewards(held_out_reward, final.samples, eval_condition).mean())
    result.seconds = time.perf_counter() - start
    return result


@torch.no_grad()
def _interpolate_into_budget(params: list[nn.Parameter], initial: list[torch.Tensor], measure: Callable[[], float],
                             target: float, bisections: int = 8) -> float:
    """Move the trainable weights back along the line to their initial values (the pretrained model: LoRA and
    the side network start at zero) until ``measure()`` is at most ``target``, the interpolation towards the
    initialisation of WARP (Ramé et al., 2024) used as a projection onto the budget; returns the share ``α`` of
    the update kept (1: the budget held already), found by bisection on ``θ0 + α (θ − θ0)``."""
    final = [p.detach().clone() for p in params]

    def place(alpha: float) -> None:
        for p, start, end in zip(params, initial, final, strict=True):
            p.copy_(start + alpha * (end - start))

    if measure() <= target:
        return 1.0
    inside, outside = 0.0, 1.0
    for _ in range(bisections):
        middle = (inside + outside) / 2
        place(middle)
        if measure() <= target:
            inside = middle
        else:
            outside = middle
    place(inside)
    return inside


def _index(condition: Any, rows: torch.Tensor) -> Any:
    return None if condition is None else condition[rows]


__all__ = ["METHODS", "FinetuneConfig", "FinetuneResult", "KLOptimum", "ValueBaseline", "finetune", "kl_optimum",
           "knn_kl", "region_log_probs"]
