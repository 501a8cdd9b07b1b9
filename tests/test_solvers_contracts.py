"""Contracts every registered max-Q solver keeps: declared capabilities, and answers of the right shapes
and dtypes for batches of 0 and 1 fixed inputs."""

import dataclasses

import pytest
import torch
from conftest import random_relu_net

import solvers
from solvers import ActionSet, SolverCapabilities, SolveStatus, capabilities_of

NAMES = solvers.available()
EXPECTED = {
    "ga": SolverCapabilities(warm_start=True, rng_state=True),
    "cem": SolverCapabilities(warm_start=True, rng_state=True),
    "pwl1d": SolverCapabilities(exact=True, max_action_dim=1),
    **{name: SolverCapabilities(exact=True, gap=True, time_limit=True, warm_start=True)
       for name in ("bnb", "exact", "scip", "ortools-scip", "ortools-highs", "ortools-cbc")},
}




def _make(name, **options):
    if name in ("scip", "ortools-scip", "ortools-highs", "ortools-cbc"):
        options.setdefault("workers", 1)
    return solvers.make(name, **options)


def test_every_builtin_solver_declares_its_capabilities():
    assert set(EXPECTED) <= set(NAMES)
    for name, expected in EXPECTED.items():
        solver = _make(name)
        assert capabilities_of(solver) == expected, name
        assert type(solver).capabilities == expected, name  # a class attribute, not an option
        assert "capabilities" not in {f.name for f in dataclasses.fields(solver)}, name


def test_capabilities_mean_what_they_say():
    for name in EXPECTED:
        caps = capabilities_of(_make(name))
        if caps.time_limit:
            _make(name, time_limit=1.0)
        else:
            with pytest.raises(ValueError, match="bad options"):
                solvers.make(name, time_limit=1.0)
        if caps.gap:
            _make(name, gap=1e-3)
        if caps.rng_state:
            solver = _make(name)
            assert callable(solver.get_rng_state) and callable(solver.set_rng_state)


@pytest.mark.parametrize("name", ["ga", "cem"])
def test_rng_state_gives_an_exact_resume(name):
    net = solvers.ReLUNet.from_torch(random_relu_net(3, 2, seed=1), fixed_dim=3)
    x, aset = torch.randn(5, 3), ActionSet.box(-1.0, 1.0, dim=2)
    solver = solvers.make(name)
    solver.solve(net, x, aset)
    state = solver.get_rng_state()
    expected = solver.solve(net, x, aset)
    resumed = solvers.make(name)
    resumed.set_rng_state(state)
    torch.testing.assert_close(resumed.solve(net, x, aset).actions, expected.actions, rtol=0, atol=0)


def test_exact_solvers_need_no_rng_state_to_repeat_themselves():
    net = solvers.ReLUNet.from_torch(random_relu_net(3, 2, seed=2), fixed_dim=3)
    x, aset = torch.randn(3, 3), ActionSet.box(-1.0, 1.0, dim=2)
    for name in ("bnb", "scip"):
        solver = _make(name)
        assert not capabilities_of(solver).rng_state
        first, second = solver.solve(net, x, aset), _make(name).solve(net, x, aset)
        torch.testing.assert_close(first.values, second.values, rtol=0, atol=1e-9)


def test_a_solver_that_declares_nothing_is_assumed_to_do_nothing():
    class Plain:
        name = "plain"

        def solve(self, net, fixed_inputs, action_set, warm_start=None, tolerance=None):
            raise NotImplementedError

    assert capabilities_of(Plain()) == SolverCapabilities()
    assert not any(dataclasses.astuple(SolverCapabilities()))

    class Declared(Plain):
        capabilities = SolverCapabilities(exact=True)

    assert capabilities_of(Declared()).exact

    class Wrong(Plain):
        capabilities = ("exact",)

    with pytest.raises(TypeError, match="SolverCapabilities"):
        capabilities_of(Wrong())
    with pytest.raises(dataclasses.FrozenInstanceError):
        SolverCapabilities().exact = True


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [0, 1])
@pytest.mark.parametrize("name", NAMES)
def test_batches_of_zero_and_one(name, batch, dtype):
    dim = min(2, capabilities_of(_make(name)).max_action_dim or 2)
    net = solvers.ReLUNet.from_torch(random_relu_net(3, dim, hidden=(8, 8), seed=3).to(dtype), fixed_dim=3)
    aset = ActionSet.box(-1.0, 1.0, dim=dim)
    x = torch.randn(batch, 3, dtype=dtype, generator=torch.Generator().manual_seed(batch))
    solver = _make(name)
    for warm in (None, torch.zeros(batch, dim, dtype=dtype)):
        result = solver.solve(net, x, aset, warm_start=warm)
        assert result.actions.shape == (batch, dim) and result.actions.dtype == dtype
        for tensor in (result.values, result.upper_bounds, result.gaps):
            assert tensor.shape == (batch,) and tensor.dtype == dtype
        assert result.status.shape == (batch,) and result.status.dtype == torch.int8
        assert isinstance(result.solve_seconds, float) and result.solve_seconds >= 0
        assert sum(result.status_counts().values()) == batch
        if batch:
            assert aset.contains(result.actions.float()).all()
            torch.testing.assert_close(result.values, net(x, result.actions))
            assert (result.upper_bounds >= result.values).all()
            if capabilities_of(solver).exact:
                assert SolveStatus(int(result.status[0])) != SolveStatus.APPROXIMATE
                assert torch.isfinite(result.upper_bounds).all()


def test_bad_warm_start_for_an_empty_batch_is_still_an_error():
    net = solvers.ReLUNet.from_torch(random_relu_net(3, 2), fixed_dim=3)
    with pytest.raises(ValueError, match="warm_start must have shape"):
        solvers.make("bnb").solve(net, torch.zeros(0, 3), ActionSet.box(-1.0, 1.0, dim=2), warm_start=torch.zeros(1, 2))
