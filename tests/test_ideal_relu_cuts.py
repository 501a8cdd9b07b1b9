"""The Anderson et al. (2020) ideal ReLU inequalities: valid on every point of the graph of a neuron, separating
for fractional LP points, and the MIP with them as cuts reaches the big-M optimum."""

import numpy as np
import pytest
import torch
from conftest import random_relu_net

import solvers
from solvers import ActionSet, SolveStatus
from solvers.mip_model import NeuronInputs, separate_ideal

SCALE, SHIFT = 2.0, 0.5
"""Inputs are affine in the model's variables, ``x_i = SHIFT + SCALE v_i`` (as a substituted active neuron is)."""


def _neuron(seed: int, inputs: int = 5) -> NeuronInputs:
    rng = np.random.default_rng(seed)
    lower, upper = -rng.random(inputs), rng.random(inputs) + 0.2
    # variables: v_0 .. v_{n-1}, then h, d
    forms = [({i: SCALE}, SHIFT) for i in range(inputs)]
    return NeuronInputs(inputs, inputs + 1, rng.normal(size=inputs), float(rng.normal() * 0.3), forms, lower, upper)


def _variables(x, h, d):
    return np.concatenate([(x - SHIFT) / SCALE, [h, d]])


def _cut_value(cut, neuron, values):
    coefs, d_coef, rhs = cut
    lhs = values[neuron.h_index] - sum(c * values[i] for i, c in coefs.items()) - d_coef * values[neuron.d_index]
    return lhs, rhs


@pytest.mark.parametrize("seed", range(5))
def test_every_separated_cut_holds_on_the_graph_of_the_neuron(seed):
    neuron = _neuron(seed)
    rng = np.random.default_rng(100 + seed)
    n = len(neuron.forms)
    found = 0
    for _ in range(200):
        # A fractional point of the big-M relaxation: the cut, if any, must be valid for the integer points.
        x = neuron.lower + rng.random(n) * (neuron.upper - neuron.lower)
        d = rng.random()
        reach = neuron.bias + np.maximum(neuron.weights * neuron.upper, neuron.weights * neuron.lower).sum()
        h = rng.random() * max(reach, 0.1)
        cut = separate_ideal(neuron, _variables(x, h, d))
        if cut is None:
            continue
        found += 1
        lhs, rhs = _cut_value(cut, neuron, _variables(x, h, d))
        assert lhs > rhs  # it cuts the point off
        for _ in range(50):
            point = neuron.lower + rng.random(n) * (neuron.upper - neuron.lower)
            z = float(neuron.weights @ point + neuron.bias)
            graph = _variables(point, max(z, 0.0), float(z > 0))
            lhs, rhs = _cut_value(cut, neuron, graph)
            assert lhs <= rhs + 1e-9
    assert found > 0


@pytest.mark.parametrize(("dim", "kind"), [(3, "box"), (6, "box"), (3, "l1_ball")])
def test_the_cut_formulation_reaches_the_big_m_optimum(dim, kind):
    net = solvers.ReLUNet.from_torch(random_relu_net(3, dim, (12, 10), seed=dim), fixed_dim=3)
    aset = ActionSet.box(-1.0, 1.0, dim=dim) if kind == "box" else ActionSet.l1_ball([0.0] * dim, 1.2)
    x = torch.randn(3, 3, generator=torch.Generator().manual_seed(dim))
    options = {"workers": 1, "gap": 1e-5, "time_limit": 30.0, "skip_certified": False, "bounds": "ibp"}
    bigm = solvers.make("scip", **options).solve(net, x, aset)
    ideal = solvers.make("scip", formulation="anderson", **options).solve(net, x, aset)
    assert (ideal.status != SolveStatus.TIME_LIMIT).all()
    torch.testing.assert_close(ideal.values, bigm.values, atol=1e-5, rtol=0)
    assert (ideal.upper_bounds >= bigm.values - 1e-6).all()


def test_the_cut_formulation_needs_scip():
    with pytest.raises(ValueError, match="needs backend 'scip'"):
        solvers.make("ortools-highs", formulation="anderson")
