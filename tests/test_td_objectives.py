"""rlcore.objectives.td: every TD target, loss and step checked by hand, and the opt-in value checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rlcore.networks import DiagGaussian
from rlcore.objectives import (
    bellman_loss,
    clipped_double_q_targets,
    hinge_multiplier_step,
    polyak_update,
    soft_q_targets,
    temperature_step,
    validate_args,
    validate_args_enabled,
)


def test_clipped_double_q_targets_by_hand():
    rewards, terminated = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 1.0])
    next_q, next_q2 = torch.tensor([5.0, 7.0]), torch.tensor([4.0, 9.0])
    # min(5, 4) = 4: 1 + 0.5 * 4 = 3; terminal: no bootstrap, 2.
    assert clipped_double_q_targets(rewards, terminated, next_q, next_q2, 0.5).tolist() == [3.0, 2.0]
    assert clipped_double_q_targets(rewards, terminated, next_q, None, 0.5).tolist() == [3.5, 2.0]
    assert clipped_double_q_targets(rewards, terminated.bool(), next_q, None, 0.5).tolist() == [3.5, 2.0]


def test_bellman_losses_by_hand():
    q, y = torch.tensor([1.0, 3.0]), torch.tensor([2.0, 1.0])
    assert bellman_loss(q, y, "l2").item() == pytest.approx((1 + 4) / 2)
    # hinge: mean[q + lambda relu(y - q)] = ((1 + 2 * 1) + (3 + 0)) / 2 = 3
    assert bellman_loss(q, y, "hinge", torch.tensor(2.0)).item() == pytest.approx(3.0)
    with pytest.raises(ValueError, match="needs the multiplier"):
        bellman_loss(q, y, "hinge")
    with pytest.raises(ValueError, match="'l2' or 'hinge'"):
        bellman_loss(q, y, "huber")


def test_hinge_multiplier_step_raises_lambda_while_targets_exceed_q():
    log_lambda = nn.Parameter(torch.tensor(0.0))
    optimizer = torch.optim.SGD([log_lambda], lr=0.1)
    # d/dlog_lambda of -mean(exp(l) (y - q)) = -exp(0) * mean(y - q) = -1.5: SGD moves it up by 0.15.
    hinge_multiplier_step(log_lambda, optimizer, torch.tensor([0.0, 1.0]), torch.tensor([2.0, 2.0]))
    assert log_lambda.item() == pytest.approx(0.15)


def test_soft_q_targets_by_hand():
    next_q = torch.tensor([[3.0, 1.0], [2.0, 5.0]])  # [critics, B]: the min is [2, 1]
    targets = soft_q_targets(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), next_q,
                             torch.tensor([-1.0, 4.0]), alpha=0.5, gamma=0.9)
    # 1 + 0.9 * (2 - 0.5 * -1) = 3.25; terminal: 0.
    torch.testing.assert_close(targets, torch.tensor([3.25, 0.0]))


def test_polyak_update_by_hand():
    target, source = nn.Linear(1, 1), nn.Linear(1, 1)
    with torch.no_grad():
        target.weight.fill_(1.0), target.bias.fill_(0.0), source.weight.fill_(3.0), source.bias.fill_(2.0)
    polyak_update(target, source, 0.25)
    assert target.weight.item() == pytest.approx(1.5) and target.bias.item() == pytest.approx(0.5)


def test_temperature_step_by_hand():
    log_alpha = nn.Parameter(torch.tensor(0.0))
    optimizer = torch.optim.SGD([log_alpha], lr=1.0)
    # loss = -mean(log_alpha (log_prob + target)); its gradient is -mean(log_prob + target) = -(-2 + 1) = 1.
    temperature_step(log_alpha, optimizer, torch.tensor([-2.0, -2.0]), target_entropy=1.0)
    assert log_alpha.item() == pytest.approx(-1.0)


def test_value_checks_are_on_in_direct_use_and_scoped_off():
    assert validate_args_enabled()
    bad = torch.tensor([[float("nan")]])
    with pytest.raises(ValueError, match="NaN"):
        DiagGaussian(bad, torch.zeros(1, 1))
    with validate_args(False):
        assert not validate_args_enabled()
        DiagGaussian(bad, torch.zeros(1, 1))  # no check, no wait on the device
    assert validate_args_enabled()


def test_the_training_loops_run_without_value_checks(tmp_path, monkeypatch):
    from rlcore.algos.ppo import PPOAgent, PPOConfig, train

    seen = []
    explore = PPOAgent.explore

    def spy(self, obs):
        seen.append(validate_args_enabled())
        return explore(self, obs)

    monkeypatch.setattr(PPOAgent, "explore", spy)
    train(PPOConfig(total_steps=64, num_steps=32, num_minibatches=2, eval_episodes=1, progress=False,
                    run_dir=str(tmp_path / "run")))
    assert seen and not any(seen)
    assert validate_args_enabled()
