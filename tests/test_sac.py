"""SAC: targets by hand, feasible actions, resume equality, CLI registration and a short learning run."""

import pytest
import torch

from rlcore import algos
from rlcore.algos.sac import SACAgent, SACConfig, train
from rlcore.loops.checkpoint import load_checkpoint
from rlcore.objectives import soft_q_targets
from solvers import ActionSet


def test_soft_q_targets_by_hand():
    rewards, terminated = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 1.0])
    next_q = torch.tensor([[5.0, 3.0], [4.0, 7.0]])  # two critics x two transitions
    next_log_prob = torch.tensor([-1.0, 2.0])
    # y = r + gamma (1 - d) (min_j Q_j - alpha log pi) = 1 + 0.9 (4 + 0.5), and 2 at the terminal.
    targets = soft_q_targets(rewards, terminated, next_q, next_log_prob, alpha=0.5, gamma=0.9)
    torch.testing.assert_close(targets, torch.tensor([1 + 0.9 * 4.5, 2.0]))


@pytest.mark.parametrize("action_set", [ActionSet.box([-0.3, 0.0], [0.2, 2.0]), ActionSet.l2_ball([0.5, 0.0], 0.4)],
                         ids=["box", "l2_ball"])
def test_actions_are_always_inside_the_action_set(action_set):
    agent = SACAgent(SACConfig(hidden_sizes=(16, 16)), obs_dim=3, action_set=action_set)
    with torch.no_grad():  # a large output scale saturates the tanh: the edge cases
        agent.actor.body[-1].weight.mul_(100.0)
    obs = torch.randn(512, 3) * 5
    for deterministic in (True, False):
        assert action_set.contains(agent.act(obs, deterministic=deterministic)).all()
    actions, log_prob = agent.actor.sample(obs)
    assert action_set.contains(actions).all() and torch.isfinite(log_prob).all()


@pytest.mark.parametrize("half_width", [0.25, 1.0, 2.0])
def test_entropy_target_matches_sb3s_on_any_box(half_width):
    # SB3 takes log-probabilities of actions normalised to [-1, 1]^D and targets -D. rlcore's are of the action
    # in the box (lower by sum log s_d). The temperature loss reads log_prob + target: the two must agree.
    from rlcore.algos.vmbpo import VMBPOAgent, VMBPOConfig
    from rlcore.networks.distributions import DiagGaussian

    action_set = ActionSet.box(-half_width, half_width, 3)
    agent = SACAgent(SACConfig(hidden_sizes=(16, 16)), obs_dim=4, action_set=action_set)
    obs = torch.randn(64, 4)
    _, log_prob = agent.actor.sample(obs, torch.Generator().manual_seed(0))
    in_box = agent.actor.dist(obs)
    in_unit_box = DiagGaussian(in_box.mean, in_box.log_std, squash=True)  # the same Gaussian, squashed into [-1, 1]
    _, log_prob_unit = in_unit_box.rsample_and_log_prob(torch.Generator().manual_seed(0))
    torch.testing.assert_close(log_prob + agent.target_entropy, log_prob_unit - 3.0)
    vmbpo = VMBPOAgent(VMBPOConfig(hidden_sizes=(16, 16)), obs_dim=4, action_set=action_set)
    assert vmbpo.target_entropy == pytest.approx(agent.target_entropy)
    assert SACAgent(SACConfig(target_entropy=-1.5), 4, action_set).target_entropy == -1.5  # an explicit one is kept


def test_update_returns_detached_tensor_metrics_and_moves_the_targets():
    agent = SACAgent(SACConfig(hidden_sizes=(16, 16), batch_size=8), obs_dim=3, action_set=ActionSet.box(-1.0, 1.0, 2))
    from rlcore.loops.replay import TransitionBatch

    batch = TransitionBatch(torch.randn(8, 3), torch.rand(8, 2) * 2 - 1, torch.randn(8), torch.randn(8, 3),
                            torch.zeros(8))
    before = [p.clone() for p in agent.critic_target.parameters()]
    metrics = agent.update(batch)
    assert all(isinstance(v, torch.Tensor) and not v.requires_grad for v in metrics.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.critic_target.parameters(), strict=True))
    assert metrics["alpha"].item() == pytest.approx(1.0)


SMALL = dict(env="Pendulum-v1", total_steps=600, learning_starts=200, random_steps=200, batch_size=64,
             hidden_sizes=(32, 32), eval_interval=300, eval_episodes=2, checkpoint_interval=300, log_interval=300,
             progress=False)


def test_resume_half_way_ends_bit_for_bit_equal(tmp_path):
    full = train(SACConfig(**SMALL, run_dir=str(tmp_path / "full")))
    half = train(SACConfig(**{**SMALL, "total_steps": 300}, run_dir=str(tmp_path / "resumed")))
    assert load_checkpoint(half.run_dir / "checkpoint.pt")["step"] == 300
    resumed = train(SACConfig(**SMALL, resume=str(half.run_dir)))
    for name in ("actor", "critic", "critic_target"):
        for (key, a), (_, b) in zip(getattr(full.agent, name).state_dict().items(),
                                    getattr(resumed.agent, name).state_dict().items(), strict=True):
            assert torch.equal(a, b), f"{name}.{key} differs after resume"
    assert torch.equal(full.agent.log_alpha, resumed.agent.log_alpha)
    assert full.evaluations[-1]["returns"] == resumed.evaluations[-1]["returns"]


def test_registered_for_the_cli_and_bad_config_raises():
    assert algos.get("sac").config_cls is SACConfig
    with pytest.raises(ValueError, match="tau"):
        train(SACConfig(tau=0.0))


@pytest.mark.slow  # a learning run of minutes: the slow set, which CI runs after the default suite
def test_sac_learns_inverted_pendulum(tmp_path):
    # A random policy balances for about 5-25 steps (evaluation return ~20); small-network SAC passes 80
    # within 3k steps (measured about 50 s on a shared core; the best evaluation 100-300).
    result = train(SACConfig(env="InvertedPendulum-v5", total_steps=3000, learning_starts=500, random_steps=500,
                             batch_size=128, hidden_sizes=(64, 64), learning_rate=1e-3, actor_learning_rate=1e-3,
                             alpha_learning_rate=1e-3, eval_interval=500, eval_episodes=5, seed=1,
                             run_dir=str(tmp_path / "learn"), progress=False))
    returns = [e["return_mean"] for e in result.evaluations]
    assert returns[0] < 40 and max(returns[2:]) > 80, returns
