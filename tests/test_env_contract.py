"""The wider environment contract: candidate-set and discrete actions, dict observations through auto-reset,
``final_obs``, replay and rollout storage, checkpoints and evaluation metrics; PPO learns CartPole-v1."""

from __future__ import annotations

import json
from typing import Any

import gymnasium as gym
import pytest
import torch
from test_algorithm_contract import assert_same_state

from rlcore import envs
from rlcore.algos.ppo import PPOConfig
from rlcore.algos.ppo import train as train_ppo
from rlcore.envs import CandidateChoiceEnv, CandidateSet, spaces
from rlcore.loops import ReplayBuffer, RolloutStorage, TrainConfig, TransitionBatch, train_off_policy


def best_candidate(obs: dict[str, torch.Tensor]) -> torch.Tensor:
    affinity = (obs["candidates"] @ obs["user"].unsqueeze(-1)).squeeze(-1)
    return affinity.masked_fill(~obs["candidate_mask"], -torch.inf).argmax(1)


def test_candidate_set_spec_and_dict_observations():
    env = envs.make("CandidateChoice-v0", num_envs=3, seed=0)
    assert isinstance(env, envs.BatchedEnv)
    assert isinstance(env.action_space, CandidateSet) and env.action_set is None
    assert isinstance(env.observation_space, gym.spaces.Dict)
    assert env.action_dim == 8 and env.obs_dim == 4 * 9 + 8
    obs, _ = env.reset(seed=1)
    assert obs["candidates"].shape == (3, 8, 4) and obs["candidate_mask"].dtype == torch.bool
    assert obs["candidate_mask"].sum(1).min() >= 2


def test_dict_observations_auto_reset_with_final_obs():
    env = CandidateChoiceEnv(num_envs=2, episode_length=3)
    obs, _ = env.reset(seed=0)
    user = obs["user"].clone()
    for step in range(3):
        previous = obs
        obs, _reward, terminated, truncated, info = env.step(best_candidate(previous))
        assert not terminated.any()
        if step < 2:
            assert not truncated.any()
            assert all(torch.equal(obs[k], info["final_obs"][k]) for k in obs)
            assert torch.equal(obs["user"], user)
    # The episode was cut at step 3: obs already starts the next episode (a new user), final_obs ends the old one.
    assert truncated.all()
    assert torch.equal(info["final_obs"]["user"], user) and not torch.equal(obs["user"], user)
    torch.testing.assert_close(info["episode_metrics"]["hit_rate"], torch.ones(2))  # the best was always picked


@pytest.mark.parametrize(("actions", "message"), [
    (torch.tensor([0.0, 1.0]), "integer indices"),
    (torch.tensor([0, 1, 2]), r"\[num_envs\] = \[2\]"),
    (torch.tensor([0, 8]), r"in \[0, 8\)"),
    (torch.tensor([0, 7]), r"rows \[1\] point at candidate slots that are not on offer"),
])
def test_candidate_actions_are_checked(actions, message):
    env = CandidateChoiceEnv(num_envs=2, max_candidates=8, min_candidates=2)
    _obs, _ = env.reset(seed=0)
    env._mask[1] = torch.arange(8) < 2  # row 1 offers slots 0 and 1 only
    with pytest.raises(ValueError, match=message):
        env.step(actions)


def test_discrete_gymnasium_task_and_actions_checked():
    env = envs.make("CartPole-v1", num_envs=2, seed=0)
    assert isinstance(env.action_space, gym.spaces.Discrete) and env.action_set is None and env.action_dim == 2
    obs, reward, *_ = env.step(torch.tensor([0, 1]))
    assert obs.shape == (2, 4) and reward.tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match=r"in \[0, 2\)"):
        env.step(torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="integer indices"):
        env.step(torch.zeros(2))


def test_environment_state_resumes_exactly():
    a = CandidateChoiceEnv(num_envs=3, episode_length=4)
    a.reset(seed=5)
    for _ in range(5):
        a.step(torch.zeros(3, dtype=torch.long))
    b = CandidateChoiceEnv(num_envs=3, episode_length=4)
    b.load_state_dict(a.state_dict())
    for _ in range(6):
        actions = torch.zeros(3, dtype=torch.long)
        out_a, out_b = a.step(actions), b.step(actions)
        assert all(torch.equal(out_a[0][k], out_b[0][k]) for k in out_a[0])
        assert torch.equal(out_a[1], out_b[1]) and torch.equal(out_a[3], out_b[3])


def test_replay_and_rollout_storage_keep_dict_observations():
    env = CandidateChoiceEnv(num_envs=2)
    obs, _ = env.reset(seed=0)
    replay, storage = ReplayBuffer(8, seed=0), RolloutStorage(3, 2, "cpu")
    for t in range(3):
        actions = best_candidate(obs)
        next_obs, reward, terminated, truncated, info = env.step(actions)
        replay.add(obs, actions, reward, info["final_obs"], terminated)
        storage.add(t, obs, actions, reward, terminated, truncated, info["final_obs"], {})
        last_obs, obs = obs, next_obs
    assert torch.equal(storage.rollout.obs["candidates"][2], last_obs["candidates"])
    assert storage.rollout.actions.dtype == torch.long
    restored = ReplayBuffer(8, seed=0)
    restored.load_state_dict(replay.state_dict())
    a, b = replay.sample(5), restored.sample(5)
    assert torch.equal(a.obs["candidate_mask"], b.obs["candidate_mask"]) and torch.equal(a.actions, b.actions)
    assert a.actions.dtype == torch.long and set(a.obs) == {"user", "candidates", "candidate_mask"}


class CandidateQAgent:
    """Q(s, c) = c · W u over (user, candidate) pairs, epsilon-greedy: a value-based agent whose action set is
    the candidates on offer (the way a dialogue manager or slate agent scores candidates)."""

    def __init__(self, config: TrainConfig, env: Any) -> None:
        d = env.action_space.embedding_dim
        self.w = torch.zeros(d, d, requires_grad=True)
        self.optimizer = torch.optim.SGD([self.w], lr=0.5)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.gamma = 0.0  # one-step values: the reward does not depend on the action's future

    def q(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return (obs["candidates"] @ (self.w @ obs["user"].unsqueeze(-1))).squeeze(-1)

    @torch.no_grad()
    def act(self, obs: dict[str, torch.Tensor], step: int = 0, deterministic: bool = False) -> torch.Tensor:
        greedy = self.q(obs).masked_fill(~obs["candidate_mask"], -torch.inf).argmax(1)
        if deterministic:
            return greedy
        random = spaces.sample_actions(spaces.CandidateSet(obs["candidates"].shape[1], obs["user"].shape[1]),
                                       greedy.shape[0], self.generator, obs)
        explore = torch.rand(greedy.shape, generator=self.generator) < 0.2
        return torch.where(explore, random, greedy)

    def update(self, batch: TransitionBatch) -> dict[str, torch.Tensor]:
        q = self.q(batch.obs).gather(1, batch.actions[:, None]).squeeze(1)
        loss = (q - batch.rewards).pow(2).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.detach()}

    def state_dict(self) -> dict[str, Any]:
        return {"w": self.w.detach().clone(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.w.copy_(state["w"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])


def _candidate_run(tmp_path, label: str, **overrides: Any):
    config = TrainConfig(**{"total_steps": 600, "learning_starts": 50, "eval_interval": 300,
                            "checkpoint_interval": 300, "eval_episodes": 4, "num_envs": 2, "batch_size": 32,
                            "progress": False, "run_dir": str(tmp_path / label), **overrides})
    return train_off_policy("candidate-q", config, CandidateQAgent, env=lambda seed: CandidateChoiceEnv(num_envs=2),
                            eval_env=lambda seed: CandidateChoiceEnv(4))


def test_a_run_on_env_objects_with_dict_observations_learns_resumes_and_logs_metrics(tmp_path):
    full = _candidate_run(tmp_path, "full")
    last = full.evaluations[-1]
    # The uniform policy's hit rate is E[1/k] for k uniform in 2..8, about 0.27; the learned one picks the best.
    assert last["metrics"]["hit_rate"] > 0.8, last
    assert len(last["episode_metrics"]["hit_rate"]) == 4
    written = json.loads((full.run_dir / "evaluations.jsonl").read_text().splitlines()[-1])
    assert written["metrics"] == last["metrics"]
    record = json.loads((full.run_dir / "config.json").read_text())
    assert record["env_from_config"] is False and "CandidateChoiceEnv" in record["env_description"]

    _candidate_run(tmp_path, "resumed", total_steps=300)
    config = TrainConfig(total_steps=600, learning_starts=50, eval_interval=300, checkpoint_interval=300,
                         eval_episodes=4, num_envs=2, batch_size=32, progress=False, resume=str(tmp_path / "resumed"))
    resumed = train_off_policy("candidate-q", config, CandidateQAgent,
                               env=lambda seed: CandidateChoiceEnv(num_envs=2),
                               eval_env=lambda seed: CandidateChoiceEnv(4))
    assert_same_state(full.agent.state_dict(), resumed.agent.state_dict())
    assert [e["returns"] for e in full.evaluations] == [e["returns"] for e in resumed.evaluations]
    # Without the environment objects the run cannot be resumed (the config does not say how to build them).
    with pytest.raises(ValueError, match="was trained on an environment object"):
        train_off_policy("candidate-q", config, CandidateQAgent)


def test_an_environment_object_needs_a_separate_evaluation_environment(tmp_path):
    config = TrainConfig(total_steps=10, progress=False, run_dir=str(tmp_path / "run"))
    with pytest.raises(ValueError, match="also needs eval_env"):
        train_off_policy("candidate-q", config, CandidateQAgent, env=CandidateChoiceEnv(2))
    assert not (tmp_path / "run").exists()


def test_ppo_with_a_categorical_head_learns_cartpole(tmp_path):
    # A random policy scores about 22 on CartPole-v1; measured: 150-500 after 20k steps on seeds 1-3.
    result = train_ppo(PPOConfig(env="CartPole-v1", total_steps=20_480, num_steps=512, num_minibatches=8,
                                 eval_interval=20_480, checkpoint_interval=20_480, eval_episodes=5, progress=False,
                                 run_dir=str(tmp_path / "cartpole")))
    assert result.final_return > 100, result.evaluations
