"""Bound propagation (solvers.bounds): every bound holds against dense sampling; CROWN is never looser than IBP."""

import pytest
import torch
from conftest import random_relu_net

import solvers
from solvers import ActionSet
from solvers.bounds import Domain, compute_bounds, interval_bounds, linear_layers, optimised_output_bound

SETS = {
    "box": ActionSet.box([-1.0, -0.5, 0.0], [1.0, 0.5, 2.0]),
    "l2_ball": ActionSet.l2_ball([0.2, -0.1, 0.3], 0.8),
    "l1_ball": ActionSet.l1_ball([0.0, 0.4, -0.2], 1.2),
}
METHODS = ["ibp", "crown", "wong-kolter", "obbt"]


def _net(hidden, seed=0):
    return solvers.ReLUNet.from_torch(random_relu_net(4, 3, hidden, seed).double(), fixed_dim=4)


def _sampled_preactivations(net, x, actions):
    """Pre-activations of every hidden layer and Q at ``actions`` for every sample: lists of [B, S, h]."""
    weights, biases = net.fold_fixed_inputs(x)
    z = actions.unsqueeze(0) @ weights[0].T + biases[0].unsqueeze(1)
    pre = [z]
    for weight, bias in zip(weights[1:], biases[1:], strict=True):
        z = torch.relu(z) @ weight.T + bias
        pre.append(z)
    return pre[:-1], pre[-1].squeeze(-1)


@pytest.mark.parametrize("hidden", [(10, 6), (8, 6, 5)])
@pytest.mark.parametrize("kind", list(SETS))
def test_every_bound_holds_against_dense_sampling(hidden, kind):
    net, aset = _net(hidden), SETS[kind]
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    actions = aset.sample(20000, torch.Generator().manual_seed(2)).double()
    pre, q = _sampled_preactivations(net, x, actions)
    for method in METHODS:
        bounds = compute_bounds(method, net, x, aset, dtype=torch.float64)
        assert (bounds.output_upper >= q.max(dim=1).values - 1e-9).all(), method
        assert (bounds.output_lower <= q.min(dim=1).values + 1e-9).all(), method
        for k, z in enumerate(pre):
            assert (z >= bounds.lower[k].unsqueeze(1) - 1e-9).all(), (method, k)
            assert (z <= bounds.upper[k].unsqueeze(1) + 1e-9).all(), (method, k)


@pytest.mark.parametrize("kind", list(SETS))
def test_crown_is_never_looser_than_ibp_and_obbt_never_looser_than_crown(kind):
    net, aset = _net((12, 8, 6), seed=3), SETS[kind]
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    ibp, crown, obbt = (compute_bounds(m, net, x, aset, dtype=torch.float64) for m in ("ibp", "crown", "obbt"))
    assert (crown.output_upper <= ibp.output_upper + 1e-12).all()
    assert (obbt.output_upper <= crown.output_upper + 1e-12).all()
    for k in range(3):
        assert (crown.upper[k] <= ibp.upper[k] + 1e-12).all() and (crown.lower[k] >= ibp.lower[k] - 1e-12).all()
        assert (obbt.upper[k] <= crown.upper[k] + 1e-12).all() and (obbt.lower[k] >= crown.lower[k] - 1e-12).all()
    assert crown.unstable() <= ibp.unstable()
    # On a random net the linear bound is strictly tighter somewhere.
    assert (crown.output_upper < ibp.output_upper - 1e-6).any()


def test_forward_mode_equals_backward_crown_for_two_hidden_layers():
    net, aset = _net((10, 6)), SETS["box"]
    x = torch.randn(4, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    weights, biases = net.fold_fixed_inputs(x)
    domain = Domain.from_action_set(aset, 4, torch.float64, "cpu")
    forward = linear_layers(weights, biases, domain, intermediate="forward")
    backward = linear_layers(weights, biases, domain, intermediate="backward")
    torch.testing.assert_close(forward.output_upper, backward.output_upper)
    torch.testing.assert_close(forward.upper[1], backward.upper[1])


def test_sub_boxes_of_a_ball_are_bounded_and_empty_ones_detected():
    net = _net((8, 6))
    x = torch.randn(1, 4, dtype=torch.float64).expand(2, -1)
    weights, biases = net.fold_fixed_inputs(x)
    low = torch.tensor([[0.0, 0.0, 0.0], [0.7, 0.7, 0.7]], dtype=torch.float64)
    domain = Domain(low, low + 0.3, "l2_ball", torch.zeros(3, dtype=torch.float64), 1.0)
    assert domain.empty().tolist() == [False, True]  # the second box lies outside the unit ball
    bounds = linear_layers(weights, biases, domain)
    inside = ActionSet.l2_ball(0.0, 1.0, dim=3).sample(50000, torch.Generator().manual_seed(0)).double()
    inside = inside[((inside >= 0) & (inside <= 0.3)).all(dim=1)]
    q = net(x[:1].expand(inside.shape[0], -1), inside)
    assert bounds.output_upper[0] >= q.max() - 1e-9


def test_zero_radius_set_gives_exact_bounds():
    net = _net((8, 6))
    x = torch.randn(2, 4, dtype=torch.float64)
    center = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
    bounds = compute_bounds("crown", net, x, ActionSet.l2_ball(center, 0.0), dtype=torch.float64)
    q = net(x, center.expand(2, -1))
    torch.testing.assert_close(bounds.output_upper, q)
    torch.testing.assert_close(bounds.output_lower, q)


def test_unknown_method_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown bound method 'alpha'"):
        compute_bounds("alpha", _net((4,)), torch.zeros(1, 4), SETS["box"])


def test_bounds_follow_the_network_dtype_by_default():
    net = solvers.ReLUNet.from_torch(random_relu_net(4, 3, (6,)), fixed_dim=4)
    assert interval_bounds(net, torch.zeros(2, 4), SETS["box"]).output_upper.dtype == torch.float32


@pytest.mark.parametrize("kind", ["l2_ball", "l1_ball"])
def test_exact_support_over_box_and_ball(kind):
    generator = torch.Generator().manual_seed(0)
    low = torch.rand(6, 3, generator=generator, dtype=torch.float64) * 1.6 - 1.0
    high = low + 0.6
    center = torch.zeros(3, dtype=torch.float64)
    domain = Domain(low, high, kind, center, 1.0)
    coef = torch.randn(6, 3, generator=generator, dtype=torch.float64)
    exact = domain.support_exact(coef)
    points = ActionSet.l2_ball(0.0, 1.0, dim=3) if kind == "l2_ball" else ActionSet.l1_ball(0.0, 1.0, dim=3)
    points = points.sample(200000, generator).double()
    for n in range(6):
        inside = points[((points >= low[n]) & (points <= high[n])).all(dim=1)]
        if len(inside):
            assert exact[n] >= (inside @ coef[n]).max() - 1e-9
    assert (exact <= domain.support(coef) + 1e-12).all()
    # A box inside the ball: the box's support. A box around the ball: the ball's support.
    inner = Domain(torch.full((1, 3), -0.1, dtype=torch.float64), torch.full((1, 3), 0.1, dtype=torch.float64),
                   kind, center, 1.0)
    outer = Domain(torch.full((1, 3), -2.0, dtype=torch.float64), torch.full((1, 3), 2.0, dtype=torch.float64),
                   kind, center, 1.0)
    c = coef[:1]
    torch.testing.assert_close(inner.support_exact(c), Domain(inner.low, inner.high).support(c))
    dual = c.norm(dim=1) if kind == "l2_ball" else c.abs().amax(dim=1)
    torch.testing.assert_close(outer.support_exact(c), dual, atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_an_empty_batch_gives_empty_bounds(method):
    net, aset = _net((10, 6)), SETS["l1_ball"]
    bounds = compute_bounds(method, net, torch.zeros(0, 4, dtype=torch.float64), aset, dtype=torch.float64)
    assert bounds.output_upper.shape == (0,) and bounds.output_lower.shape == (0,)
    assert [tuple(lo.shape) for lo in bounds.lower] == [(0, 10), (0, 6)] == [tuple(up.shape) for up in bounds.upper]
    assert bounds.output_upper.dtype == torch.float64 and bounds.unstable() == 0


def test_obbt_time_limit_keeps_valid_bounds():
    net, aset = _net((12, 8, 6), seed=3), SETS["box"]
    x = torch.randn(4, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    crown = compute_bounds("crown", net, x, aset, dtype=torch.float64)
    rushed = compute_bounds("obbt", net, x, aset, dtype=torch.float64, time_limit=0.0)
    for k in range(3):  # no LP ran: the CROWN bounds, which are valid
        torch.testing.assert_close(rushed.lower[k], crown.lower[k])
        torch.testing.assert_close(rushed.upper[k], crown.upper[k])
    assert (rushed.output_upper <= crown.output_upper + 1e-12).all()


@pytest.mark.parametrize("hidden", [(10, 6), (8, 6, 5)])
@pytest.mark.parametrize("kind", list(SETS))
def test_optimised_slopes_are_sound_and_never_looser_than_crown(hidden, kind):
    """alpha-CROWN on random sub-boxes: above Q at 20k sampled actions of each box, below CROWN's bound, and
    strictly tighter somewhere (the optimisation does something)."""
    net, aset = _net(hidden, seed=5), SETS[kind]
    generator = torch.Generator().manual_seed(6)
    x = torch.randn(6, 4, generator=generator, dtype=torch.float64)
    full = Domain.from_action_set(aset, 6, torch.float64, "cpu")
    corner = full.low + (full.high - full.low) * torch.rand(6, 3, generator=generator, dtype=torch.float64) * 0.5
    domain = full.select(corner, torch.minimum(corner + (full.high - full.low) * 0.6, full.high))
    weights, biases = net.fold_fixed_inputs(x)
    crown = linear_layers(weights, biases, domain, intersect_ibp=False)
    upper, coef, slopes = optimised_output_bound(weights, biases, domain, crown, steps=20, lr=0.1)
    assert coef.shape == (6, 3) and [s.shape for s in slopes] == [(6, h) for h in hidden]
    assert all(((s >= 0) & (s <= 1)).all() for s in slopes)
    assert (upper <= crown.output_upper + 1e-12).all()
    assert (upper < crown.output_upper - 1e-6).any()
    u = torch.rand(20000, 3, generator=generator, dtype=torch.float64)
    for n in range(6):
        actions = domain.low[n] + u * (domain.high[n] - domain.low[n])
        if kind != "box":
            actions = actions[aset.contains(actions.float(), atol=0.0)]
        if actions.shape[0] == 0:
            continue
        q = net(x[n:n + 1].expand(actions.shape[0], -1), actions)
        assert float(q.max()) <= float(upper[n]) + 1e-9, n
    # The returned slopes reproduce the returned bound: a warm start continues where this call ended.
    again, _, _ = optimised_output_bound(weights, biases, domain, crown, slopes=slopes, steps=0)
    torch.testing.assert_close(again, upper, rtol=0, atol=1e-12)
