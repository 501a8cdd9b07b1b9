"""The exact 1-D max-Q solver against dense grids, branch-and-bound, and itself under chunking and compaction."""

import pytest
import torch
from conftest import random_relu_net

import solvers
from solvers import ActionSet, SolveStatus

SETS = {
    "box": ActionSet.box(-0.7, 1.3, dim=1),
    "l2_ball": ActionSet.l2_ball(0.2, 0.9, dim=1),
    "l1_ball": ActionSet.l1_ball(-0.5, 0.25, dim=1),
}


def grid_max(net: solvers.ReLUNet, states: torch.Tensor, aset: ActionSet, points: int = 20_001) -> torch.Tensor:
    grid = torch.linspace(float(aset.low[0]), float(aset.high[0]), points, dtype=states.dtype).unsqueeze(1)
    return torch.stack([net(s.expand(points, -1), grid).max() for s in states])


def fitted_net(seed: int) -> torch.nn.Sequential:
    """A (32, 16) net fitted to a bumpy Q-function, the way a trained critic has many pieces but few modes."""
    generator = torch.Generator().manual_seed(seed)
    net = random_relu_net(3, 1, hidden=(32, 16), seed=seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(200):
        inputs = torch.rand(256, 4, generator=generator) * 2 - 1
        target = torch.sin(3 * inputs[:, 3:] + 2 * inputs[:, :1]) - (inputs[:, 3:] - inputs[:, 1:2]) ** 2
        loss = (net(inputs) - target).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net.requires_grad_(False)


@pytest.mark.parametrize("last_layer", ["sparse", "padded"])
@pytest.mark.parametrize("hidden", [(8,), (16, 8), (32, 16), (8, 8, 8), (6, 6, 6, 6)])
@pytest.mark.parametrize("set_name", list(SETS))
def test_matches_a_dense_grid_on_random_nets(hidden, set_name, last_layer):
    aset = SETS[set_name]
    for seed in range(2):
        net = solvers.ReLUNet.from_torch(random_relu_net(3, 1, hidden=hidden, seed=seed), fixed_dim=3)
        states = torch.randn(8, 3, generator=torch.Generator().manual_seed(seed)) * 2
        result = solvers.make("pwl1d", last_layer=last_layer).solve(net, states, aset)
        best_on_grid = grid_max(net, states, aset)
        assert aset.contains(result.actions).all()
        torch.testing.assert_close(result.values, net(states, result.actions))
        # Never below the grid (it is exact), and above it by no more than the grid's resolution allows.
        assert (result.values >= best_on_grid - 1e-5).all(), (best_on_grid - result.values).max()
        assert (result.values <= best_on_grid + 1e-3).all()
        assert (result.status == int(SolveStatus.OPTIMAL)).all()
        torch.testing.assert_close(result.upper_bounds, result.values)


def test_matches_a_grid_and_bnb_on_fitted_nets_in_float64():
    aset = SETS["box"]
    for seed in range(1):
        net = solvers.ReLUNet.from_torch(fitted_net(seed).double(), fixed_dim=3)
        states = torch.rand(16, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * 2 - 1
        result = solvers.make("pwl1d").solve(net, states, aset)
        assert (result.values >= grid_max(net, states, aset) - 1e-9).all()
        certified = solvers.make("bnb", gap=1e-7).solve(net, states, aset)
        assert (certified.status <= int(SolveStatus.GAP_LIMIT)).all()  # certified within the gap
        assert (result.values >= certified.values - 1e-7).all()
        assert (result.values <= certified.upper_bounds + 1e-7).all()


def test_chunks_and_compaction_do_not_change_the_answer():
    net = solvers.ReLUNet.from_torch(random_relu_net(3, 1, hidden=(12, 12, 12), seed=4), fixed_dim=3)
    states = torch.randn(40, 3, generator=torch.Generator().manual_seed(4)) * 2
    aset = SETS["box"]
    reference = solvers.make("pwl1d").solve(net, states, aset)
    for options in ({"max_elements": 1}, {"compact_above": 2}, {"max_elements": 5_000, "compact_above": 8},
                    {"last_layer": "padded"}, {"last_layer": "sparse", "max_elements": 1}):
        other = solvers.make("pwl1d", **options).solve(net, states, aset)
        torch.testing.assert_close(other.values, reference.values, rtol=0, atol=1e-6)


def test_maximum_at_a_kink_and_at_an_endpoint_by_hand():
    # Q(x, a) = -|a - x| = -(relu(a - x) + relu(x - a)): the maximum is the kink a = x inside [-1, 1],
    # and the nearer endpoint outside it.
    layer1 = torch.nn.Linear(2, 2)
    layer2 = torch.nn.Linear(2, 1)
    with torch.no_grad():
        layer1.weight.copy_(torch.tensor([[-1.0, 1.0], [1.0, -1.0]]))
        layer1.bias.zero_()
        layer2.weight.copy_(torch.tensor([[-1.0, -1.0]]))
        layer2.bias.zero_()
    net = solvers.ReLUNet.from_torch(torch.nn.Sequential(layer1, torch.nn.ReLU(), layer2), fixed_dim=1)
    states = torch.tensor([[0.3], [-0.6], [2.0], [-5.0]])
    result = solvers.make("pwl1d").solve(net, states, ActionSet.box(-1.0, 1.0, dim=1))
    torch.testing.assert_close(result.actions, torch.tensor([[0.3], [-0.6], [1.0], [-1.0]]))
    torch.testing.assert_close(result.values, torch.tensor([0.0, 0.0, -1.0, -4.0]))


def test_refuses_more_than_one_action_dimension():
    net = solvers.ReLUNet.from_torch(random_relu_net(3, 2), fixed_dim=3)
    with pytest.raises(ValueError, match=r"1-D action sets only.*2 action inputs.*'bnb'"):
        solvers.make("pwl1d").solve(net, torch.zeros(2, 3), ActionSet.box(-1.0, 1.0, dim=2))
    with pytest.raises(ValueError, match="max_elements"):
        solvers.make("pwl1d", max_elements=0)
    with pytest.raises(ValueError, match="last_layer must be 'auto', 'sparse' or 'padded', got 'dense'"):
        solvers.make("pwl1d", last_layer="dense")
