"""Exact and certified max-Q: SCIP, the OR-Tools backends and the batched branch-and-bound.

Contracts: agreement with a dense brute-force grid (1-2 action dims), agreement with each other (3 and 6
action dims), ``value == Q(action)``, an upper bound never below the true maximum, honest statuses
under tight limits, and clear errors.
"""

import importlib.util
from pathlib import Path

import pytest
import torch
from conftest import random_relu_net
from torch import nn

import solvers
from solvers import ActionSet, SolveStatus

EXACT = ["scip", "ortools-scip", "ortools-highs", "ortools-cbc", "bnb", "exact"]
GAP = 1e-4


def _net(action_dim, hidden=(8, 8), seed=0):
    return solvers.ReLUNet.from_torch(random_relu_net(3, action_dim, hidden, seed), fixed_dim=3)


def _make(name, **options):
    if name not in ("bnb", "exact"):
        options.setdefault("workers", 1)
    return solvers.make(name, gap=GAP, **options)


def _set(kind, dim):
    if kind == "box":
        return ActionSet.box([-1.0] * dim, [1.0, 0.5][:dim] + [1.0] * max(dim - 2, 0))
    if kind == "l2_ball":
        return ActionSet.l2_ball([0.1] * dim, 0.9)
    return ActionSet.l1_ball([-0.1] * dim, 1.1)


def _grid_max(net, x, aset, points=401):
    """Brute force: the best value of Q over a dense grid of the set, per sample."""
    axes = [torch.linspace(float(lo), float(hi), points) for lo, hi in zip(aset.low, aset.high, strict=True)]
    grid = torch.cartesian_prod(*axes).reshape(-1, aset.dim)
    grid = grid[aset.contains(grid, atol=0.0)]
    q = net(x.repeat_interleave(grid.shape[0], 0), grid.repeat(x.shape[0], 1)).reshape(x.shape[0], -1)
    return q.max(dim=1).values


def _check_result(net, x, aset, result, gap=GAP):
    assert aset.contains(result.actions, atol=1e-6).all()
    torch.testing.assert_close(result.values, net(x, result.actions), atol=1e-5, rtol=0)
    assert (result.upper_bounds >= result.values - 1e-6).all()
    certified = result.status != SolveStatus.TIME_LIMIT
    assert (result.gaps[certified] <= gap + 1e-5).all()


@pytest.mark.parametrize("kind", ["box", "l2_ball", "l1_ball"])
@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize("name", EXACT)
def test_exact_solvers_agree_with_a_dense_grid(name, dim, kind):
    net, aset = _net(dim, seed=dim), _set(kind, dim)
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(7))
    result = _make(name).solve(net, x, aset)
    brute = _grid_max(net, x, aset, points=4001 if dim == 1 else 301)
    _check_result(net, x, aset, result)
    assert (result.status != SolveStatus.TIME_LIMIT).all()
    assert (result.upper_bounds >= brute - 1e-6).all()  # never below the true maximum (>= the grid's)
    assert (result.values >= brute - GAP - 1e-5).all()  # and as good as the grid, up to the gap


CROSS_CASES = [(3, "box"), (6, "box"), (3, "l2_ball"), (4, "l2_ball"), (3, "l1_ball"), (6, "l1_ball"),
               pytest.param(6, "l2_ball", marks=pytest.mark.slow)]  # ~1 min: HiGHS/CBC cut loops, bnb on a sphere


@pytest.mark.parametrize(("dim", "kind"), CROSS_CASES)
def test_exact_solvers_agree_with_each_other(dim, kind):
    net, aset = _net(dim, hidden=(10, 8), seed=10 + dim), _set(kind, dim)
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(dim))
    # The MILP backends approximate an l2 ball by cuts; in 6 dims 30 rounds leave a gap above 1e-4.
    rounds = {"max_cut_rounds": 100} if kind == "l2_ball" and dim >= 6 else {}
    results = {name: _make(name, time_limit=30.0, **(rounds if name in ("ortools-highs", "ortools-cbc") else {}))
               .solve(net, x, aset) for name in EXACT}
    results["scip-sos1"] = _make("scip", formulation="sos1", bounds="obbt").solve(net, x, aset)
    for name, result in results.items():
        _check_result(net, x, aset, result)
        assert (result.status != SolveStatus.TIME_LIMIT).all(), name
    best_value = torch.stack([r.values for r in results.values()]).max(dim=0).values
    best_bound = torch.stack([r.upper_bounds for r in results.values()]).min(dim=0).values
    assert (best_bound >= best_value - 1e-6).all()  # every bound is above every solver's value
    for name, result in results.items():
        assert (result.values >= best_value - GAP - 1e-5).all(), name


@pytest.mark.parametrize("name", ["scip", "ortools-highs", "bnb"])
def test_a_tight_limit_returns_the_incumbent_and_a_valid_bound(name):
    net = _net(6, hidden=(48, 48), seed=3)
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(3))
    aset = ActionSet.box(-1.0, 1.0, dim=6)
    if name == "bnb":
        solver = solvers.make("bnb", gap=0.0, max_iterations=1)
    else:
        solver = solvers.make(name, gap=0.0, time_limit=0.05, workers=1, skip_certified=False, bounds="ibp")
    result = solver.solve(net, x, aset)
    _check_result(net, x, aset, result, gap=0.0)
    samples = aset.sample(20000, torch.Generator().manual_seed(0))
    sampled = net(x.repeat_interleave(20000, 0), samples.repeat(2, 1)).reshape(2, -1).max(dim=1).values
    assert (result.upper_bounds >= sampled - 1e-6).all()
    if name == "bnb":
        assert (result.status == SolveStatus.TIME_LIMIT).all()
    # A time-limited answer is never called optimal without a certificate.
    optimal = result.status == SolveStatus.OPTIMAL
    assert (result.gaps[optimal] <= 1e-5).all()


def test_a_net_with_no_unstable_neurons_is_solved_exactly():
    # Every hidden neuron is on over the box, so Q is linear and the optimum is the vertex c > 0.
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 1))
    with torch.no_grad():
        module[0].weight.mul_(0.1)
        module[0].bias.fill_(5.0)
    net = solvers.ReLUNet.from_torch(module, fixed_dim=2)
    x = torch.randn(2, 2) * 0.1
    aset = ActionSet.box(-1.0, 1.0, dim=3)
    c = (module[2].weight @ module[0].weight[:, 2:]).detach().squeeze(0)
    expected_action = torch.where(c > 0, 1.0, -1.0).expand(2, -1)
    for name in EXACT:
        result = _make(name, skip_certified=False) if name not in ("bnb", "exact") else _make(name)
        result = result.solve(net, x, aset)
        torch.testing.assert_close(result.values, net(x, expected_action), atol=1e-4, rtol=0)
        assert (result.status != SolveStatus.TIME_LIMIT).all()


@pytest.mark.parametrize("name", EXACT)
def test_zero_radius_set(name):
    net = _net(3, seed=5)
    x = torch.randn(2, 3)
    aset = ActionSet.l2_ball([0.2, -0.3, 0.1], 0.0)
    result = _make(name).solve(net, x, aset)
    center = aset.center.expand(2, -1)
    torch.testing.assert_close(result.actions, center, atol=1e-6, rtol=0)
    torch.testing.assert_close(result.values, net(x, center), atol=1e-6, rtol=0)
    assert (result.gaps <= GAP + 1e-6).all()


def test_skipping_certified_samples_and_tolerance_override():
    net = _net(2, seed=1)
    x = torch.randn(4, 3)
    aset = ActionSet.box(-1.0, 1.0, dim=2)
    loose = _make("scip").solve(net, x, aset, tolerance=10.0)  # CROWN alone certifies every sample
    assert (loose.status == SolveStatus.GAP_LIMIT).all() or (loose.status == SolveStatus.OPTIMAL).all()
    assert (loose.gaps <= 10.0).all()
    tight = _make("bnb").solve(net, x, aset, tolerance=1e-6)
    assert (tight.gaps <= 1e-6 + 1e-9).all()


def test_worker_pool_matches_serial_solving():
    net = _net(3, seed=2)
    x = torch.randn(3, 3, generator=torch.Generator().manual_seed(2))
    aset = ActionSet.box(-1.0, 1.0, dim=3)
    serial = solvers.make("scip", workers=1, skip_certified=False).solve(net, x, aset)
    pooled = solvers.make("scip", workers=2, skip_certified=False).solve(net, x, aset)
    torch.testing.assert_close(pooled.values, serial.values, atol=2e-3, rtol=0)


def test_float32_branch_and_bound_stays_above_the_true_maximum():
    net = _net(2, hidden=(16, 8), seed=4)
    x = torch.randn(3, 3)
    aset = ActionSet.box(-1.0, 1.0, dim=2)
    result = solvers.make("bnb", dtype="float32").solve(net, x, aset)
    assert (result.upper_bounds >= _grid_max(net, x, aset) - 1e-6).all()


def test_branch_and_bound_meets_the_gap_in_the_nets_own_dtype():
    # Values near 100 have float32 ulps of 8e-6: re-evaluating Q and rounding the bound up in float32 after a
    # float64 search used to widen 10 of these 64 gaps past 1e-4.
    module = random_relu_net(3, 3, (16, 8), 0)
    with torch.no_grad():
        module[-1].weight.mul_(300.0)
        module[-1].bias.fill_(100.0)
    net = solvers.ReLUNet.from_torch(module, fixed_dim=3)
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(1))
    result = solvers.make("bnb", gap=1e-4).solve(net, x, ActionSet.box(-1.0, 1.0, dim=3))
    assert result.values.dtype == torch.float32 and result.values.abs().max() > 50
    assert (result.status != SolveStatus.TIME_LIMIT).all()
    assert (result.upper_bounds - result.values <= 1e-4).all()


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="Tanh"):
        solvers.ReLUNet.from_torch(nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 1)), fixed_dim=2)
    with pytest.raises(ValueError, match="sos1"):
        solvers.make("ortools-highs", formulation="sos1")
    with pytest.raises(ValueError, match="bounds"):
        solvers.make("scip", bounds="alpha-crown")
    with pytest.raises(ValueError, match="dtype"):
        solvers.make("bnb", dtype="float16")
    with pytest.raises(ValueError, match="bad options"):
        solvers.make("scip", no_such_option=1)
    with pytest.raises(RuntimeError, match="INVALID_ARGUMENT") as error:  # SCIP's own message
        _make("ortools-scip", params={"no/such/param": 1}, skip_certified=False).solve(
            _net(2), torch.zeros(1, 3), ActionSet.box(-1.0, 1.0, dim=2))
    assert "canonical_code" not in str(error.value)  # not OR-Tools' masking AttributeError (or-tools#4606)


def test_ray_executor_names_the_extra_when_missing():
    try:
        import ray  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match=r"rlcore\[distributed\]"):
            solvers.make("scip", executor="ray")
    else:  # pragma: no cover - only where Ray is installed
        assert solvers.make("scip", executor="ray").executor == "ray"


def test_registered_names():
    assert set(EXACT) <= set(solvers.available())
    with pytest.raises(ValueError, match=r"registered solvers: .*bnb"):
        solvers.make("gurobi")


def test_map_jobs_keeps_order_and_checks_its_arguments():
    from solvers.parallel import map_jobs

    assert map_jobs(abs, [-3, 2, -1], workers=1) == [3, 2, 1]
    assert map_jobs(abs, [-3, 2, -1], executor="serial") == [3, 2, 1]
    with pytest.raises(ValueError, match="workers must be >= 1"):
        map_jobs(abs, [1, 2], workers=0)
    with pytest.raises(ValueError, match="executor must be one of"):
        map_jobs(abs, [1], executor="threads")


def test_the_portfolio_hands_what_bnb_leaves_open_to_scip():
    net, aset = _net(4, hidden=(16, 12), seed=21), _set("box", 4)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(21))
    reference = _make("scip", time_limit=30.0).solve(net, x, aset)
    # One branching iteration leaves every state open for the MIP stage.
    portfolio = solvers.make("exact", gap=GAP, time_limit=30.0, bnb_options={"max_iterations": 1})
    result = portfolio.solve(net, x, aset)
    assert portfolio.last_stages == {"bnb": 5, "scip": 5}
    _check_result(net, x, aset, result)
    assert (result.status != SolveStatus.TIME_LIMIT).all()
    torch.testing.assert_close(result.values, reference.values, atol=2 * GAP, rtol=0)
    # Left alone, bnb certifies all of them and SCIP is not started.
    alone = solvers.make("exact", gap=GAP, time_limit=30.0)
    alone.solve(net, x, aset)
    assert alone.last_stages == {"bnb": 5, "scip": 0}


def test_the_portfolio_takes_the_closed_form_in_one_dimension():
    net, aset = _net(1, seed=22), _set("box", 1)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(22))
    portfolio = solvers.make("exact")
    result = portfolio.solve(net, x, aset)
    assert portfolio.last_stages == {"pwl1d": 4}
    torch.testing.assert_close(result.values, _grid_max(net, x, aset, points=20001), atol=1e-4, rtol=0)


def test_portfolio_options_are_checked():
    with pytest.raises(ValueError, match="bnb_share"):
        solvers.make("exact", bnb_share=0.0)
    with pytest.raises(ValueError, match="may not set gap"):
        solvers.make("exact", bnb_options={"gap": 0.1})


@pytest.mark.parametrize("slope_threshold", [0, 128])
def test_optimised_slopes_keep_branch_and_bound_exact(slope_threshold):
    """With the slopes optimised from the first box (threshold 0) or once splitting stalls, bnb still agrees
    with SCIP, and the bound it certifies is never below the true maximum."""
    net, aset = _net(6, hidden=(16, 12), seed=23), _set("box", 6)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(23))
    reference = _make("scip", time_limit=30.0).solve(net, x, aset)
    for dtype in ("float64", "float32"):
        result = _make("bnb", slope_threshold=slope_threshold, dtype=dtype).solve(net, x, aset)
        _check_result(net, x, aset, result)
        assert (result.status != SolveStatus.TIME_LIMIT).all()
        assert (result.upper_bounds >= reference.values - 1e-5).all()
        torch.testing.assert_close(result.values, reference.values, atol=2 * GAP, rtol=0)


def _real_net(name):
    """A Q-network saved from a CAQL run (benchmarks/data/q_networks) and its replay states."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "collect_q_networks.py"
    spec = importlib.util.spec_from_file_location("collect_q_networks", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    q, states, record = module.load_q_network(module.DATA / name)
    return solvers.ReLUNet.from_torch(q, fixed_dim=record["obs_dim"]), states, record["action_dim"]


@pytest.mark.parametrize("name", ["HalfCheetah-v5-32x16-20000.pt", "Walker2d-v5-32x16-8000.pt"])
def test_bounds_on_real_q_networks_stay_above_the_best_known_maximum(name):
    """On nets from real CAQL runs (6 action dims), bnb's bounds in float64 and float32, and the portfolio's,
    are never below SCIP's optimum or the best of 20k sampled actions."""
    net, states, action_dim = _real_net(name)
    x, aset = states[:3], ActionSet.box(-1.0, 1.0, dim=action_dim)
    reference = _make("scip", time_limit=30.0).solve(net, x, aset)
    samples = aset.sample(20000, torch.Generator().manual_seed(0))
    sampled = net(x.repeat_interleave(20000, 0), samples.repeat(3, 1)).reshape(3, -1).amax(1)
    best = torch.maximum(reference.values, sampled)
    for solver in (_make("bnb"), _make("bnb", dtype="float32"), _make("bnb", slope_threshold=0), _make("exact")):
        result = solver.solve(net, x, aset)
        _check_result(net, x, aset, result)
        assert (result.upper_bounds >= best - 1e-6).all()
        assert (result.status != SolveStatus.TIME_LIMIT).all()
