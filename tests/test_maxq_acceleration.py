"""CAQL's max-Q accelerations: dynamic tolerance, dual filter, clustering with Taylor estimates."""

import pytest
import torch

from rlcore.algos.caql import CAQLAgent, CAQLConfig
from rlcore.algos.maxq_acceleration import dual_filter, dynamic_tolerance, farthest_first_clusters, taylor_estimates
from rlcore.loops.replay import TransitionBatch
from rlcore.objectives import bellman_loss as q_loss
from solvers import ActionSet


def test_dynamic_tolerance_schedule():
    assert dynamic_tolerance(2.0, 0, init=0.1, decay=0.5, tol_min=1e-4, tol_max=100) == pytest.approx(0.2)
    assert dynamic_tolerance(2.0, 3, init=0.1, decay=0.5, tol_min=1e-4, tol_max=100) == pytest.approx(0.025)
    assert dynamic_tolerance(2.0, 100, init=0.1, decay=0.5, tol_min=1e-4, tol_max=100) == 1e-4
    assert dynamic_tolerance(1e6, 0, init=0.1, decay=0.5, tol_min=1e-4, tol_max=100) == 100


def test_dual_filter_mask_by_hand():
    rewards = torch.tensor([1.0, 1.0, 1.0, 5.0])
    terminated = torch.tensor([0.0, 0.0, 1.0, 0.0])
    upper = torch.tensor([2.0, 2.0, 2.0, 2.0])
    q_values = torch.tensor([2.0, 3.5, 0.0, 6.0])
    # r + 0.5 UB = 2, 2, (terminal), 6: no optimistic target exceeds its Q(s, a) (2 > 2 is false).
    assert dual_filter(rewards, terminated, upper, q_values, 0.5).tolist() == [False, False, False, False]
    # Lower Q(s, a) below the optimistic target for the first and last: they become active.
    q_values = torch.tensor([1.9, 3.5, 0.0, 5.0])
    assert dual_filter(rewards, terminated, upper, q_values, 0.5).tolist() == [True, False, False, True]


def test_farthest_first_covers_every_point_within_the_radius():
    points = torch.randn(200, 5, generator=torch.Generator().manual_seed(0))
    centres, nearest = farthest_first_clusters(points, 1.5, torch.Generator().manual_seed(1))
    assert torch.isin(nearest, centres).all()
    assert ((points - points[nearest]).norm(dim=1) < 1.5).all()
    # Each point's assigned centre is its nearest centre.
    distances = (points[:, None] - points[centres][None]).norm(dim=2)
    torch.testing.assert_close((points - points[nearest]).norm(dim=1), distances.min(dim=1).values)
    # Centres are pairwise at least the radius apart (each was the farthest point when chosen).
    chosen = points[centres]
    pairwise = (chosen[:, None] - chosen[None]).norm(dim=2) + torch.eye(len(centres)) * 1e9
    assert pairwise.min() >= 1.5
    assert len(farthest_first_clusters(points, 0.0, torch.Generator())[0]) == 200


def test_taylor_estimate_by_hand():
    # Q(s, a) = 2 s0 - s1 + a (linear), centre c = (1, 1), a* = 0.5, x = (1.5, 0.5):
    # Q(c, a*) = 1.5, grad_s = (2, -1), estimate = 1.5 + 2 * 0.5 + (-1) * (-0.5) = 3.0.
    def q_function(states, actions):
        return 2 * states[:, 0] - states[:, 1] + actions[:, 0]

    centre = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    action = torch.tensor([[0.5], [0.5]])
    states = torch.tensor([[1.5, 0.5], [1.5, 0.5]])
    estimate = taylor_estimates(q_function, centre, action, states, torch.tensor([10.0, 2.8]))
    torch.testing.assert_close(estimate, torch.tensor([3.0, 2.8]))  # the second is capped by its bound


def _batch(n=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return TransitionBatch(torch.randn(n, 3, generator=g), torch.rand(n, 1, generator=g) * 2 - 1,
                           torch.randn(n, generator=g), torch.randn(n, 3, generator=g),
                           (torch.rand(n, generator=g) < 0.1).float())


def _agent(**options):
    torch.manual_seed(0)
    config = CAQLConfig(loss="hinge", solver="bnb", solver_gap=1e-6, dynamic_tolerance=False, **options)
    return CAQLAgent(config, obs_dim=3, action_set=ActionSet.box(-1.0, 1.0))


def test_dual_filter_leaves_the_hinge_loss_and_active_targets_unchanged():
    batch = _batch()
    full, full_step = _agent().compute_targets(batch)
    agent = _agent(dual_filter=True)
    filtered, step = agent.compute_targets(batch)
    q = agent.q(batch.obs, batch.actions).detach()
    assert 0 < step.counts["filtered"] < 64 and step.metrics["maxq_filtered"] == step.counts["filtered"]
    # Solved samples: the same target up to the solver's gap; filtered ones keep their bound.
    solved = step.solved_index
    torch.testing.assert_close(filtered[solved], full[solved], atol=1e-5, rtol=0)
    assert (filtered >= full - 1e-5).all()
    for multiplier in (0.5, 1.0, 10.0):
        torch.testing.assert_close(q_loss(q, filtered, "hinge", torch.tensor(multiplier)),
                                   q_loss(q, full, "hinge", torch.tensor(multiplier)), atol=1e-5, rtol=0)
    # Without the filter every state is solved, terminal ones included (their value is multiplied by 0).
    assert full_step.counts["filtered"] == 0 and full_step.solved_index is None
    assert "maxq_filtered" not in full_step.metrics  # nothing to log without filter or clustering


def test_clustering_solves_fewer_and_stays_below_the_bound():
    batch = _batch()
    agent = _agent(cluster_radius=0.5)
    clustered, step = agent.compute_targets(batch)
    full, _ = _agent().compute_targets(batch)
    assert step.metrics["maxq_clustered"] > 0 and step.metrics["maxq_solved"] < 64 - batch.terminated.sum()
    torch.testing.assert_close(clustered[step.solved_index], full[step.solved_index], atol=1e-5, rtol=0)
    summary = agent.summary()
    assert summary["maxq_fraction_avoided"] == pytest.approx(1 - step.counts["solved"] / 64)
