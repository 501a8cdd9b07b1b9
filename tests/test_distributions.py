"""Contracts of rlcore.networks.distributions: densities against torch.distributions, KL by Monte Carlo, masking."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import AffineTransform, Normal, TanhTransform, TransformedDistribution

from rlcore.networks.distributions import DiagGaussian, MaskedCategorical, kl_divergence

D64 = torch.float64


def _params(seed: int, shape=(4, 3)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=D64), 0.3 * torch.randn(shape, generator=g, dtype=D64)


# ---------------------------------------------------------------- DiagGaussian


def test_gaussian_log_prob_entropy_mode_match_torch():
    mu, ls = _params(0)
    dist = DiagGaussian(mu, ls)
    ref = Normal(mu, ls.exp())
    a = dist.sample(torch.Generator().manual_seed(1))
    assert a.shape == (4, 3) and dist.batch_shape == (4,)
    assert torch.allclose(dist.log_prob(a), ref.log_prob(a).sum(-1))
    assert torch.allclose(dist.entropy(), ref.entropy().sum(-1))
    assert torch.equal(dist.mode, mu)
    # State-independent log_std of shape [D] broadcasts over the batch.
    assert torch.allclose(DiagGaussian(mu, ls[0]).log_prob(a), Normal(mu, ls[0].exp()).log_prob(a).sum(-1))


def test_squashed_gaussian_log_prob_matches_torch_transform():
    mu, ls = _params(2)
    low = torch.tensor([-2.0, 0.0, -1.0], dtype=D64)
    high = torch.tensor([2.0, 1.0, 3.0], dtype=D64)
    dist = DiagGaussian(mu, ls, squash=True, low=low, high=high)
    ref = TransformedDistribution(Normal(mu, ls.exp()),
                                  [TanhTransform(), AffineTransform((high + low) / 2, (high - low) / 2)])
    a, lp = dist.sample_and_log_prob(torch.Generator().manual_seed(3))
    assert ((a >= low) & (a <= high)).all()
    assert torch.allclose(lp, ref.log_prob(a).sum(-1), atol=1e-6)
    assert torch.allclose(dist.log_prob(a), lp, atol=1e-6)  # via atanh: same value away from the edges
    assert torch.allclose(dist.mode, (high + low) / 2 + (high - low) / 2 * torch.tanh(mu))


def test_squashed_density_integrates_to_one_and_is_finite_at_the_edge():
    dist = DiagGaussian(torch.tensor([[0.7]], dtype=D64), torch.tensor([[-0.2]], dtype=D64),
                        squash=True, low=-3.0, high=5.0)
    grid = torch.linspace(-3.0, 5.0, 200_001, dtype=D64)[1:-1].unsqueeze(-1).unsqueeze(-1)
    density = dist.log_prob(grid).exp().squeeze()
    assert abs(torch.trapezoid(density, grid.squeeze()).item() - 1.0) < 1e-4
    # Far in the tail the pre-squash log-prob stays finite although tanh(u) rounds to ±1 (float32).
    far = DiagGaussian(torch.full((1, 2), 30.0), torch.zeros(1, 2), squash=True)
    a, lp = far.rsample_and_log_prob()
    assert torch.isfinite(lp).all() and torch.isfinite(far.log_prob(a)).all()


def test_rsample_carries_gradient_and_sample_does_not():
    mu = torch.zeros(2, 3, requires_grad=True)
    ls = torch.zeros(3, requires_grad=True)
    for squash in (False, True):
        dist = DiagGaussian(mu, ls, squash=squash)
        assert dist.rsample().requires_grad and not dist.sample().requires_grad
        a, lp = dist.rsample_and_log_prob()
        (a.sum() + lp.sum()).backward()
        assert mu.grad is not None and ls.grad is not None


def test_gaussian_kl_matches_monte_carlo():
    # KL(p‖q) = E_p[log p − log q], checked with 400k samples, for plain and (same-box) squashed heads: KL is
    # invariant under the common bijection, so the squashed estimate uses the squashed densities.
    mu_p, ls_p = torch.tensor([0.5, -1.0], dtype=D64), torch.tensor([-0.3, 0.2], dtype=D64)
    mu_q, ls_q = torch.tensor([0.0, 0.4], dtype=D64), torch.tensor([0.1, -0.1], dtype=D64)
    n = 400_000
    for squash in (False, True):
        box = {"squash": True, "low": -2.0, "high": 1.0} if squash else {}
        p = DiagGaussian(mu_p.expand(n, 2), ls_p.expand(n, 2), **box)
        q = DiagGaussian(mu_q.expand(n, 2), ls_q.expand(n, 2), **box)
        a, lp = p.sample_and_log_prob(torch.Generator().manual_seed(4))
        mc = (lp - q.log_prob(a)).mean().item()
        exact = kl_divergence(p, q)[0].item()
        assert exact > 0.3 and abs(mc - exact) < 0.02, (squash, mc, exact)
        assert torch.allclose(p.kl(q), kl_divergence(p, q))


def test_gaussian_errors():
    mu = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="squash=True"):
        DiagGaussian(mu, torch.zeros(3), low=-1.0, high=1.0)
    with pytest.raises(ValueError, match="low < high"):
        DiagGaussian(mu, torch.zeros(3), squash=True, low=1.0, high=1.0)
    with pytest.raises(ValueError, match="broadcast"):
        DiagGaussian(mu, torch.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        DiagGaussian(torch.full((2, 3), math.nan), torch.zeros(3))
    with pytest.raises(ValueError, match="last dimension"):
        DiagGaussian(mu, torch.zeros(3)).log_prob(torch.zeros(2, 4))
    with pytest.raises(NotImplementedError, match="squashed"):
        DiagGaussian(mu, torch.zeros(3), squash=True).entropy()
    with pytest.raises(ValueError, match="same box"):
        kl_divergence(DiagGaussian(mu, torch.zeros(3)), DiagGaussian(mu, torch.zeros(3), squash=True))


# ---------------------------------------------------------------- MaskedCategorical


def _masked() -> MaskedCategorical:
    logits = torch.tensor([[1.0, 2.0, 3.0, 0.5], [0.0, math.nan, -1.0, 4.0]], dtype=D64)
    mask = torch.tensor([[True, False, True, True], [True, False, True, False]])
    return MaskedCategorical(logits, mask)


def test_masked_categorical_invalid_candidates_have_zero_probability():
    dist = _masked()
    probs = dist.probs
    assert (probs[~dist.mask] == 0).all()  # exactly zero, NaN logits at invalid places ignored
    assert torch.allclose(probs.sum(-1), torch.ones(2, dtype=D64))
    assert torch.allclose(probs[0, [0, 2, 3]], torch.softmax(torch.tensor([1.0, 3.0, 0.5], dtype=D64), 0))
    samples = MaskedCategorical(dist.logits.expand(5000, 2, 4), dist.mask.expand(5000, 2, 4)).sample(
        torch.Generator().manual_seed(0))
    assert samples.shape == (5000, 2)
    assert dist.mask[[0, 1] * 5000, samples.reshape(-1)].all()  # never an invalid candidate
    assert torch.equal(dist.mode, torch.tensor([2, 0]))


def test_masked_categorical_log_prob_and_entropy():
    dist = _masked()
    a = torch.tensor([3, 2])
    lp = dist.log_prob(a)
    assert torch.allclose(lp, dist.probs[[0, 1], a].log())
    p0 = dist.probs[0, [0, 2, 3]]
    p1 = dist.probs[1, [0, 2]]
    assert torch.allclose(dist.entropy(), torch.stack([-(p0 * p0.log()).sum(), -(p1 * p1.log()).sum()]))
    # Gradients through log_prob and entropy stay finite despite the −inf logits.
    logits = torch.randn(2, 4, dtype=D64, requires_grad=True)
    d = MaskedCategorical(logits, dist.mask)
    (d.log_prob(a).sum() + d.entropy().sum()).backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad[~dist.mask] == 0).all()
    with pytest.raises(ValueError, match="invalid"):
        dist.log_prob(torch.tensor([1, 0]))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        dist.log_prob(torch.tensor([4, 0]))


def test_masked_categorical_errors():
    with pytest.raises(ValueError, match="no valid candidate"):
        MaskedCategorical(torch.zeros(3, 2), torch.tensor([[True, False], [False, False], [True, True]]))
    with pytest.raises(ValueError, match="bool"):
        MaskedCategorical(torch.zeros(2, 2), torch.ones(2, 2))
    with pytest.raises(ValueError, match="shape of logits"):
        MaskedCategorical(torch.zeros(2, 2), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="no closed form"):
        kl_divergence(_masked(), DiagGaussian(torch.zeros(2, 1), torch.zeros(1)))


def test_masked_categorical_kl():
    p = _masked()
    # q offers every candidate p offers: finite KL equal to the sum over p's support.
    q = MaskedCategorical(torch.zeros(2, 4, dtype=D64))
    kl = kl_divergence(p, q)
    manual = (p.probs * (p.log_probs - q.log_probs)).nan_to_num(0.0).masked_fill(~p.mask, 0).sum(-1)
    assert torch.allclose(kl, manual) and torch.allclose(p.kl(p), torch.zeros(2, dtype=D64))
    # q masks a candidate p can pick: infinite KL for that row only.
    q2 = MaskedCategorical(torch.zeros(2, 4, dtype=D64), torch.tensor([[True, True, False, True], [True] * 4]))
    kl2 = kl_divergence(p, q2)
    assert kl2[0] == torch.inf and torch.isfinite(kl2[1])
