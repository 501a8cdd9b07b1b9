"""Contracts of rlcore.objectives on tiny, hand-checkable batches (gradients by hand or by finite differences)."""

from __future__ import annotations

import math

import pytest
import torch

from rlcore.objectives import (
    categorical_kl,
    clipped_pg_loss,
    diag_gaussian_kl,
    discounted_returns,
    f_divergence,
    gae,
    normalize_advantages,
    reinforce_loss,
    reward_weighted_loss,
    rwr_loss,
    rwr_weights,
    sample_kl,
    set_validate_args,
    value_loss,
)

D64 = torch.float64


def _grad(fn, x: torch.Tensor) -> torch.Tensor:
    x = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fn(x), x)
    return g


# ---------------------------------------------------------------- reductions and masks


def test_reductions_and_mask():
    lp = torch.tensor([-1.0, -2.0, -3.0, -4.0])
    r = torch.tensor([1.0, 2.0, 3.0, 4.0])
    mask = torch.tensor([True, False, True, False])
    per = reinforce_loss(lp, r, reduction="none")[0]
    assert torch.allclose(per, torch.tensor([1.0, 4.0, 9.0, 16.0]))
    assert torch.isclose(reinforce_loss(lp, r, reduction="sum")[0], torch.tensor(30.0))
    assert torch.isclose(reinforce_loss(lp, r)[0], torch.tensor(7.5))
    assert torch.isclose(reinforce_loss(lp, r, mask=mask)[0], torch.tensor(5.0))  # (1 + 9) / 2
    assert torch.allclose(reinforce_loss(lp, r, mask=mask, reduction="none")[0], torch.tensor([1.0, 0, 9.0, 0]))
    # 0/1 float masks are accepted; an all-False mask gives 0, not NaN.
    assert torch.isclose(reinforce_loss(lp, r, mask=mask.float())[0], torch.tensor(5.0))
    assert reinforce_loss(lp, r, mask=torch.zeros(4, dtype=torch.bool))[0] == 0
    # A masked -inf log-prob (an invalid candidate) neither poisons the value nor the gradient.
    lp_inf = torch.tensor([-1.0, -torch.inf], requires_grad=True)
    loss, _ = reinforce_loss(lp_inf, torch.ones(2), mask=torch.tensor([True, False]))
    loss.backward()
    assert loss.item() == 1.0 and torch.isfinite(lp_inf.grad).all()


def test_bad_inputs_raise_value_errors():
    lp = torch.zeros(3)
    with pytest.raises(ValueError, match="reduction"):
        reinforce_loss(lp, lp, reduction="avg")
    with pytest.raises(ValueError, match="shapes must match"):
        reinforce_loss(lp, torch.zeros(4))
    with pytest.raises(ValueError, match="mask"):
        reinforce_loss(lp, lp, mask=torch.ones(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="NaN"):
        reinforce_loss(lp, torch.tensor([0.0, math.nan, 0.0]))
    with pytest.raises(ValueError, match=r"torch\.Tensor"):
        reinforce_loss(lp, [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="clip_eps"):
        clipped_pg_loss(lp, lp, lp, clip_eps=0.0)
    with pytest.raises(ValueError, match="beta"):
        rwr_loss(lp, lp, beta=-1.0)
    with pytest.raises(ValueError, match="old_values"):
        value_loss(lp, lp, clip_eps=0.2)
    with pytest.raises(ValueError, match="samples_from"):
        f_divergence(lp, "kl", samples_from="pi")
    with pytest.raises(ValueError, match="estimator"):
        sample_kl(lp, estimator="k4")
    # Value checks can be switched off for speed; shape checks stay.
    set_validate_args(False)
    try:
        reinforce_loss(lp, torch.tensor([0.0, math.nan, 0.0]))
        with pytest.raises(ValueError, match="shapes"):
            reinforce_loss(lp, torch.zeros(4))
    finally:
        set_validate_args(True)


# ---------------------------------------------------------------- policy gradient


def test_reinforce_gradient_by_hand():
    lp = torch.tensor([-0.5, -1.0, -2.0], dtype=D64)
    r = torch.tensor([1.0, 3.0, -2.0], dtype=D64)
    b = torch.tensor([0.5, 0.5, 0.5], dtype=D64)
    g = _grad(lambda x: reinforce_loss(x, r, b)[0], lp)
    assert torch.allclose(g, -(r - b) / 3)
    # Returns and baseline are constants for the policy loss.
    r_req, b_req = r.clone().requires_grad_(True), b.clone().requires_grad_(True)
    loss, metrics = reinforce_loss(lp.clone().requires_grad_(True), r_req, b_req)
    loss.backward()
    assert r_req.grad is None and b_req.grad is None
    assert torch.isclose(metrics["advantage_mean"], (r - b).mean())
    assert not metrics["advantage_mean"].requires_grad


def test_reinforce_gradient_is_policy_gradient():
    # Finite-difference check through a tiny Gaussian policy: the REINFORCE surrogate's gradient at fixed
    # samples equals the derivative of Σ (R − b) log N(a; μ, 1) in μ.
    a = torch.tensor([0.3, -1.2, 2.0], dtype=D64)
    r = torch.tensor([1.0, -1.0, 0.5], dtype=D64)

    def surrogate(mu: torch.Tensor) -> torch.Tensor:
        return reinforce_loss(-0.5 * (a - mu) ** 2, r, r.mean().expand(3), reduction="sum")[0]

    assert torch.autograd.gradcheck(surrogate, (torch.tensor([0.1], dtype=D64, requires_grad=True),))


def test_clipped_pg_gradient_by_hand():
    eps = 0.2
    old = torch.zeros(4, dtype=D64)
    # ratios 1.0 (inside), 1.5 (above), 0.5 (below), 1.5 (above)
    lp = torch.log(torch.tensor([1.0, 1.5, 0.5, 1.5], dtype=D64))
    adv = torch.tensor([2.0, 1.0, 1.0, -1.0], dtype=D64)
    loss, metrics = clipped_pg_loss(lp, old, adv, eps, reduction="sum")
    # min(ρA, clip(ρ)A): 2, min(1.5, 1.2)=1.2, min(0.5, 0.8)=0.5, min(-1.5, -1.2)=-1.5
    assert torch.isclose(loss, -torch.tensor(2.0 + 1.2 + 0.5 - 1.5, dtype=D64))
    g = _grad(lambda x: clipped_pg_loss(x, old, adv, eps, reduction="sum")[0], lp)
    # d(−ρA)/d log π = −ρA where the unclipped term is the min, 0 where the clipped (constant) term is.
    assert torch.allclose(g, torch.tensor([-2.0, 0.0, -0.5, 1.5], dtype=D64))
    assert torch.isclose(metrics["clip_fraction"], torch.tensor(0.75, dtype=D64))
    ratio = lp.exp()
    assert torch.isclose(metrics["approx_kl"], ((ratio - 1) - lp).mean())
    assert torch.autograd.gradcheck(lambda x: clipped_pg_loss(x, old, adv, eps)[0],
                                    (torch.tensor([0.05, 0.3, -0.9, 0.4], dtype=D64, requires_grad=True),))


def test_clipped_pg_equals_reinforce_on_policy():
    # At ρ = 1 the gradient of the clipped surrogate is the policy gradient: ∇ρ = ∇ log π.
    lp = torch.tensor([-0.7, -1.1, -0.2], dtype=D64)
    adv = torch.tensor([0.5, -2.0, 1.0], dtype=D64)
    g_ppo = _grad(lambda x: clipped_pg_loss(x, lp, adv)[0], lp)
    g_pg = _grad(lambda x: reinforce_loss(x, adv)[0], lp)
    assert torch.allclose(g_ppo, g_pg)


# ---------------------------------------------------------------- value loss


def test_value_loss_by_hand_and_clipping():
    v = torch.tensor([1.0, 2.0, 0.0], dtype=D64)
    ret = torch.tensor([0.0, 2.5, 1.0], dtype=D64)
    loss, metrics = value_loss(v, ret)
    assert torch.isclose(loss, torch.tensor((1.0 + 0.25 + 1.0) / 6, dtype=D64))
    assert torch.allclose(_grad(lambda x: value_loss(x, ret)[0], v), (v - ret) / 3)
    assert "explained_variance" in metrics
    # Clipped: V_old = 0, ε = 0.5. Sample 0 moved to 1 (clipped value 0.5, target 0: unclipped error larger, so
    # the unclipped term is kept and its gradient flows). Sample 2: V = 0 = V_old, inside.
    old = torch.tensor([0.0, 0.0, 0.0], dtype=D64)
    g = _grad(lambda x: value_loss(x, ret, old, clip_eps=0.5, reduction="sum")[0], v)
    # Sample 1: V = 2, V_clip = 0.5, target 2.5: clipped error (4) > unclipped (0.25): max is the constant-in-V
    # clipped term, so no gradient.
    assert torch.allclose(g, torch.tensor([1.0, 0.0, -1.0], dtype=D64))
    assert torch.autograd.gradcheck(lambda x: value_loss(x, ret, old, clip_eps=0.5)[0],
                                    (torch.tensor([0.2, 1.3, -0.1], dtype=D64, requires_grad=True),))


def test_explained_variance():
    ret = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert torch.isclose(value_loss(ret, ret)[1]["explained_variance"], torch.tensor(1.0))
    assert torch.isclose(value_loss(torch.full((4,), 2.5), ret)[1]["explained_variance"], torch.tensor(0.0))


# ---------------------------------------------------------------- KL


def test_diag_gaussian_kl_matches_torch_and_gradcheck():
    g = torch.Generator().manual_seed(0)
    mu, ls, mu2, ls2 = (torch.randn(5, 3, generator=g, dtype=D64) * 0.5 for _ in range(4))
    kl = diag_gaussian_kl(mu, ls, mu2, ls2, reduction="none")
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mu, ls.exp()),
                                            torch.distributions.Normal(mu2, ls2.exp())).sum(-1)
    assert kl.shape == (5,) and torch.allclose(kl, ref)
    # Equal variances: ‖μ − μ'‖² / (2σ²) (DPOK's per-step form).
    s = torch.full((3,), math.log(0.3), dtype=D64)
    assert torch.allclose(diag_gaussian_kl(mu, s, mu2, s, reduction="none"), ((mu - mu2) ** 2).sum(-1) / (2 * 0.09))
    # A state-independent log_std broadcasts.
    assert diag_gaussian_kl(mu, ls[0], mu2, ls2[0], reduction="none").shape == (5,)
    assert torch.autograd.gradcheck(lambda a, b: diag_gaussian_kl(a, b, mu2, ls2),
                                    (mu.clone().requires_grad_(True), ls.clone().requires_grad_(True)))


def test_categorical_kl_with_zero_probabilities():
    logits = torch.tensor([[0.0, 1.0, -torch.inf], [2.0, 0.0, 0.5]], dtype=D64)
    ref = torch.tensor([[0.5, 0.0, 1.0], [0.0, 0.0, 0.0]], dtype=D64)
    kl = categorical_kl(logits, ref, reduction="none")
    p, q = torch.softmax(logits, -1), torch.softmax(ref, -1)
    manual = torch.stack([(p[0, :2] * (p[0, :2].log() - q[0, :2].log())).sum(),
                          (p[1] * (p[1].log() - q[1].log())).sum()])
    assert torch.allclose(kl, manual)
    x = logits.clone().requires_grad_(True)
    categorical_kl(x, ref).backward()
    assert torch.isfinite(x.grad).all() and x.grad[0, 2] == 0
    # p puts mass where q has none: +inf.
    assert categorical_kl(torch.zeros(1, 2), torch.tensor([[0.0, -torch.inf]]), reduction="sum") == torch.inf
    finite = torch.tensor([[0.3, -0.2, 1.0]], dtype=D64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: categorical_kl(a, ref[:1]), (finite,))


def test_sample_kl_estimators_and_their_gradients():
    # π = N(μ, 1), π_ref = N(0, 1): KL(π‖ref) = KL(ref‖π) = μ²/2, ∇_μ = μ.
    g = torch.Generator().manual_seed(1)
    mu0, n = 0.6, 400_000
    x = mu0 + torch.randn(n, generator=g, dtype=D64)  # samples from π, held fixed

    def log_ratio(mu: torch.Tensor) -> torch.Tensor:
        return -0.5 * (x - mu) ** 2 + 0.5 * x**2

    mu = torch.tensor(mu0, dtype=D64)
    exact = mu0**2 / 2
    assert abs(sample_kl(log_ratio(mu), "k1").item() - exact) < 0.01
    assert abs(sample_kl(log_ratio(mu), "k3").item() - exact) < 0.01
    # k2 is biased: here ℓ = μ(x − μ/2), so E[ℓ²/2] = μ²(1 + μ²/4)/2, exact only to second order in μ.
    assert abs(sample_kl(log_ratio(mu), "k2").item() - exact * (1 + mu0**2 / 4)) < 0.01
    assert (sample_kl(log_ratio(mu), "k3", reduction="none") >= 0).all()
    # Gradients at fixed samples (see the docstring): E∇k1 = 0, E∇k2 = ∇KL(π‖ref), E∇k3 = ∇KL(ref‖π).
    grads = {est: _grad(lambda m, e=est: sample_kl(log_ratio(m), e), mu).item() for est in ("k1", "k2", "k3")}
    assert abs(grads["k1"]) < 0.01
    assert abs(grads["k2"] - mu0) < 0.02
    assert abs(grads["k3"] - mu0) < 0.02


# ---------------------------------------------------------------- f-divergences


def _f_exact(kind: str, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    m = 0.5 * (p + q)
    return {"kl": (p * (p / q).log()).sum(), "reverse_kl": (q * (q / p).log()).sum(),
            "chi2": ((p - q) ** 2 / q).sum(),
            "js": 0.5 * (p * (p / m).log()).sum() + 0.5 * (q * (q / m).log()).sum()}[kind]


@pytest.mark.parametrize("kind", ["kl", "reverse_kl", "chi2", "js"])
def test_f_divergence_exact_on_a_discrete_support(kind):
    # Over a finite support the estimators' expectations are exact sums: Σ_x q(x)·value(x) for samples from
    # π_ref, Σ_x p(x)·value(x) for samples from π. Both must equal the textbook divergence.
    p = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=D64)
    q = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=D64)
    lr = (p / q).log()
    exact = _f_exact(kind, p, q)
    from_ref = (q * f_divergence(lr, kind, samples_from="ref", reduction="none")).sum()
    from_pi = (p * f_divergence(lr, kind, samples_from="policy", reduction="none")).sum()
    assert torch.isclose(from_ref, exact) and torch.isclose(from_pi, exact)
    # Gradient of the ref-sample form in the logits of p equals that of the exact divergence.
    logits = p.log().clone()
    g_est = _grad(lambda z: (q * f_divergence(torch.log_softmax(z, 0) - q.log(), kind,
                                              samples_from="ref", reduction="none")).sum(), logits)
    g_exact = _grad(lambda z: _f_exact(kind, torch.softmax(z, 0), q), logits)
    assert torch.allclose(g_est, g_exact)


def test_f_divergence_special_values_and_stability():
    zero = torch.zeros(3)
    for kind in ("kl", "reverse_kl", "chi2", "js"):
        for src in ("ref", "policy"):
            assert torch.allclose(f_divergence(zero, kind, samples_from=src, reduction="none"), zero)
    # Finite at large ratios (each formula is written in log-ratios, so no inf − inf or 0 · inf).
    big = torch.tensor([-40.0, 40.0])  # χ² from ref grows like e^{2ℓ}: beyond ℓ ≈ 44 it exceeds float32
    for kind in ("kl", "reverse_kl", "chi2", "js"):
        for src in ("ref", "policy"):
            assert torch.isfinite(f_divergence(big, kind, samples_from=src, reduction="none")).all(), (kind, src)
    assert torch.autograd.gradcheck(
        lambda x: f_divergence(x, "chi2", samples_from="policy"),
        (torch.tensor([0.3, -0.4], dtype=D64, requires_grad=True),))


# ---------------------------------------------------------------- reward-weighted regression


def test_rwr_weights_are_a_stable_softmax():
    r = torch.tensor([1.0, 2.0, 3.0], dtype=D64)
    w = rwr_weights(r, beta=0.5)
    assert torch.allclose(w, 3 * torch.softmax(r / 0.5, 0)) and torch.isclose(w.mean(), torch.tensor(1.0, dtype=D64))
    huge = rwr_weights(torch.tensor([1e4, 1e4 - 1.0, -1e4]), beta=1e-3)
    assert torch.isfinite(huge).all() and torch.isclose(huge.sum(), torch.tensor(3.0))
    mask = torch.tensor([True, False, True])
    wm = rwr_weights(r, 1.0, mask)
    assert wm[1] == 0 and torch.isclose(wm.sum(), torch.tensor(2.0, dtype=D64))
    assert (rwr_weights(r, 1.0, torch.zeros(3, dtype=torch.bool)) == 0).all()


def test_rwr_and_reward_weighted_gradients_by_hand():
    lp = torch.tensor([-1.0, -0.5, -2.0, -0.1], dtype=D64)
    r = torch.tensor([0.0, 1.0, 2.0, -1.0], dtype=D64)
    g = _grad(lambda x: rwr_loss(x, r, beta=2.0)[0], lp)
    assert torch.allclose(g, -torch.softmax(r / 2.0, 0))  # mean reduction: −softmax(R/β)
    _, metrics = rwr_loss(lp, r, beta=2.0)
    sm = torch.softmax(r / 2.0, 0)
    assert torch.isclose(metrics["ess"], 1 / (sm**2).sum()) and torch.isclose(metrics["max_weight"], sm.max())
    g = _grad(lambda x: reward_weighted_loss(x, r)[0], lp)
    assert torch.allclose(g, -r / 4)


# ---------------------------------------------------------------- returns and GAE


def _loop_gae(r, v, nv, term, trunc, gamma, lam):
    """Direct per-env, per-step transcription: walk each env backwards, reset the trace at episode ends."""
    T, N = r.shape
    adv = torch.zeros(T, N, dtype=r.dtype)
    for n in range(N):
        next_adv = 0.0
        for t in reversed(range(T)):
            if term[t, n]:
                delta = r[t, n] - v[t, n]
                next_adv = 0.0
            else:
                delta = r[t, n] + gamma * nv[t, n] - v[t, n]
                if trunc[t, n]:
                    next_adv = 0.0
            adv[t, n] = delta + gamma * lam * next_adv
            next_adv = adv[t, n]
    return adv


def _loop_returns(r, nv, term, trunc, gamma):
    T, N = r.shape
    out = torch.zeros(T, N, dtype=r.dtype)
    for n in range(N):
        for t in reversed(range(T)):
            if term[t, n]:
                out[t, n] = r[t, n]
            elif trunc[t, n] or t == T - 1:
                out[t, n] = r[t, n] + gamma * nv[t, n]
            else:
                out[t, n] = r[t, n] + gamma * out[t + 1, n]
    return out


def _rollout(T=12, N=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    r, v, nv = (torch.randn(T, N, generator=g, dtype=D64) for _ in range(3))
    term = torch.rand(T, N, generator=g) < 0.15
    trunc = (torch.rand(T, N, generator=g) < 0.15) & ~term
    term[3, 0], trunc[5, 1], term[7, 2], trunc[7, 2] = True, True, True, True  # both flags: termination wins
    # As in a real rollout, the next value inside an episode is the value of the next row; at episode ends
    # (and at the last row) it is the value of the true next observation, which only the bootstrap sees.
    cont = ~(term | trunc)
    nv[:-1] = torch.where(cont[:-1], v[1:], nv[:-1])
    return r, v, nv, term, trunc


@pytest.mark.parametrize("lam", [0.0, 0.9, 1.0])
def test_gae_matches_direct_loop(lam):
    r, v, nv, term, trunc = _rollout()
    adv, ret = gae(r, v, nv, term, trunc, gamma=0.97, lam=lam)
    expected = _loop_gae(r, v, nv, term, trunc, 0.97, lam)
    assert torch.allclose(adv, expected) and torch.allclose(ret, expected + v)
    if lam == 0.0:  # one-step TD error
        assert torch.allclose(adv, r + 0.97 * (~term) * nv - v)


def test_discounted_returns_match_loop_and_gae_lambda_one():
    r, v, nv, term, trunc = _rollout(seed=3)
    ret = discounted_returns(r, term, trunc, gamma=0.9, next_values=nv)
    assert torch.allclose(ret, _loop_returns(r, nv, term, trunc, 0.9))
    # With λ = 1 GAE returns are the bootstrapped Monte-Carlo returns.
    assert torch.allclose(gae(r, v, nv, term, trunc, 0.9, 1.0)[1], ret)
    # Without next_values: pure Monte Carlo (bootstrap value 0).
    mc = _loop_returns(r, torch.zeros_like(nv), term, trunc, 0.9)
    assert torch.allclose(discounted_returns(r, term, trunc, 0.9), mc)


def test_truncation_bootstraps_and_episodes_do_not_leak():
    # One env, episode 1 = steps 0-1 cut at step 1 (truncated), episode 2 = steps 2-3.
    r = torch.tensor([[1.0], [1.0], [5.0], [7.0]])
    v = torch.zeros(4, 1)
    nv = torch.tensor([[0.0], [10.0], [0.0], [3.0]])  # V(final_obs) = 10 at the truncated step
    term = torch.zeros(4, 1, dtype=torch.bool)
    trunc = torch.tensor([[False], [True], [False], [False]])
    adv, _ = gae(r, v, nv, term, trunc, gamma=0.5, lam=1.0)
    assert torch.allclose(adv[:2, 0], torch.tensor([1 + 0.5 * (1 + 0.5 * 10), 1 + 0.5 * 10]))
    # The same step terminated instead: no bootstrap, still no leak.
    adv_t, _ = gae(r, v, nv, trunc, term, gamma=0.5, lam=1.0)
    assert torch.allclose(adv_t[:2, 0], torch.tensor([1.5, 1.0]))
    # Changing the next episode's rewards does not change the first episode's advantages.
    r2 = r.clone()
    r2[2:] = -100.0
    assert torch.allclose(gae(r2, v, nv, term, trunc, 0.5, 1.0)[0][:2], adv[:2])
    ret, ret2 = discounted_returns(r, term, trunc, 0.5, nv), discounted_returns(r2, term, trunc, 0.5, nv)
    assert torch.allclose(ret2[:2], ret[:2])


def test_rollout_shape_errors():
    r = torch.zeros(5, 2)
    flags = torch.zeros(5, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="shape of rewards"):
        gae(r, torch.zeros(5, 3), r, flags, flags)
    with pytest.raises(ValueError, match="gamma"):
        discounted_returns(r, flags, flags, gamma=1.5)
    with pytest.raises(ValueError, match="lam"):
        gae(r, r, r, flags, flags, lam=-0.1)
    with pytest.raises(ValueError, match="NaN"):
        gae(r, torch.full((5, 2), math.nan), r, flags, flags)


def test_normalize_advantages():
    a = torch.tensor([1.0, 2.0, 3.0, 100.0])
    out = normalize_advantages(a)
    assert torch.isclose(out.mean(), torch.tensor(0.0), atol=1e-6)
    assert torch.isclose(out.std(unbiased=False), torch.tensor(1.0), atol=1e-4)
    mask = torch.tensor([True, True, True, False])
    out = normalize_advantages(a, mask)
    assert out[3] == 0 and torch.allclose(out[:3], normalize_advantages(a[:3]))
