import pytest
import torch

from solvers import ActionSet

SETS = [
    ActionSet.box([-1.0, -0.5], [0.5, 1.0]),
    ActionSet.l2_ball([0.2, -0.1], 0.7),
    ActionSet.l1_ball([0.0, 0.3], 0.8),
    ActionSet.l2_ball([0.1, 0.1, 0.1], 0.5),
    ActionSet.l1_ball([0.0, 0.0, 0.0, 0.0], 1.2),
]


@pytest.mark.parametrize("aset", SETS, ids=repr)
def test_projection_is_inside_idempotent_and_nearest(aset):
    g = torch.Generator().manual_seed(0)
    points = torch.randn(500, aset.dim, generator=g) * 2
    projected = aset.project(points)
    assert aset.contains(projected).all()
    torch.testing.assert_close(aset.project(projected), projected, atol=1e-6, rtol=0)
    inside = aset.contains(points, atol=0)
    torch.testing.assert_close(projected[inside], points[inside])
    # Nearest point: no feasible sample is closer than the projection.
    feasible = aset.sample(20_000, g)
    for point, proj in zip(points[:50], projected[:50], strict=True):
        best = (feasible - point).norm(dim=1).min()
        assert (point - proj).norm() <= best + 1e-5


@pytest.mark.parametrize("aset", SETS, ids=repr)
def test_samples_are_inside_and_spread(aset):
    samples = aset.sample(4000, torch.Generator().manual_seed(1))
    assert samples.shape == (4000, aset.dim)
    assert aset.contains(samples).all()
    # Uniform over the set: the mean is the centre (all these sets are symmetric).
    torch.testing.assert_close(samples.mean(0), aset.center, atol=0.05, rtol=0)


def test_l1_projection_matches_known_point():
    # Projection of (2, 0.5) onto the unit l1 ball is (1, 0): shrinking by theta = 1 clears the second coordinate.
    aset = ActionSet.l1_ball([0.0, 0.0], 1.0)
    torch.testing.assert_close(aset.project(torch.tensor([[2.0, 0.5]])), torch.tensor([[1.0, 0.0]]))
    # (1, 1) -> (0.5, 0.5).
    torch.testing.assert_close(aset.project(torch.tensor([[1.0, 1.0]])), torch.tensor([[0.5, 0.5]]))


def test_zero_radius_and_scalar_broadcast():
    point = ActionSet.l2_ball([0.3, 0.3], 0.0)
    torch.testing.assert_close(point.project(torch.randn(5, 2)), torch.tensor([[0.3, 0.3]]).expand(5, 2))
    box = ActionSet.box(-0.25, 0.25).with_dim(3)
    assert box.dim == 3 and box.low.tolist() == [-0.25] * 3


def test_bad_sets_and_actions_raise():
    with pytest.raises(ValueError, match="low <= high"):
        ActionSet.box([1.0], [0.0])
    with pytest.raises(ValueError, match="radius"):
        ActionSet.l2_ball([0.0], -1.0)
    with pytest.raises(ValueError, match="shape"):
        ActionSet.box(-1.0, 1.0, dim=2).project(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="finite"):
        ActionSet.box([float("nan")], [1.0])


def test_state_round_trip():
    for aset in SETS:
        again = ActionSet.from_state(aset.state())
        assert again.kind == aset.kind and torch.equal(again.center, aset.center) and again.radius == aset.radius
