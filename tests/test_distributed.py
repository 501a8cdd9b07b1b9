"""rlcore.distributed on a local Ray (started here): rollout actors, exactly-once collection, the Ray solver pool."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from pathlib import Path

import pytest
import torch
from conftest import random_relu_net

ray = pytest.importorskip("ray")

import solvers  # noqa: E402
from rlcore import algos, envs  # noqa: E402
from rlcore.algos.sac import SACConfig  # noqa: E402
from rlcore.distributed import NAMESPACE, DistributedConfig, RolloutPool  # noqa: E402
from rlcore.loops.checkpoint import load_latest_checkpoint  # noqa: E402
from rlcore.loops.session import RunSession  # noqa: E402
from solvers import ActionSet, SolveStatus, parallel  # noqa: E402


@pytest.fixture
def local_ray(ray_cluster):
    assert NAMESPACE == "rlcore"  # the namespace conftest's Ray is started with


def sac_config(run_dir: Path, **distributed) -> SACConfig:
    smoke = {**algos.get("sac").smoke}
    return SACConfig(**smoke, run_dir=str(run_dir), progress=False, distributed=DistributedConfig(**distributed))


def states_equal(a: dict, b: dict) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(states_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(states_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return a == b


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_one_lockstep_worker_ends_where_the_local_loop_ends(tmp_path):
    local = algos.get("sac").train(dataclasses.replace(sac_config(tmp_path / "local"), total_steps=200))
    remote = algos.get("sac").train(dataclasses.replace(
        sac_config(tmp_path / "remote", workers=1, batch_steps=1, pipeline=False), total_steps=200))
    # Equal but for the learner's act generator: the actor drew the exploration noise from its own copy.
    local_state, remote_state = local.agent.state_dict(), remote.agent.state_dict()
    assert not states_equal(local_state.pop("act_generator"), remote_state.pop("act_generator"))
    assert states_equal(local_state, remote_state)
    assert [e["returns"] for e in local.evaluations] == [e["returns"] for e in remote.evaluations]
    summary = json.loads((tmp_path / "remote" / "summary.json").read_text())
    assert summary["workers"] == 1 and summary["transitions_per_worker"] == [summary["steps"]]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["caql", "mbpo"])
@pytest.mark.usefixtures("local_ray")
def test_every_off_policy_algorithm_in_lockstep_ends_where_its_local_loop_ends(tmp_path, name):
    algorithm = algos.get(name)

    def config(run_dir: Path, **distributed):
        return algorithm.config_cls(**algorithm.smoke, run_dir=str(run_dir), progress=False,
                                    distributed=DistributedConfig(**distributed))

    local = algorithm.train(dataclasses.replace(config(tmp_path / "local"), total_steps=200))
    remote = algorithm.train(dataclasses.replace(config(tmp_path / "remote", workers=1, batch_steps=1,
                                                        pipeline=False), total_steps=200))
    # The acting parts are sent to the actor; everything else the learner computes as the local loop does.
    from rlcore.distributed.actor import without_rng

    assert states_equal(without_rng(local.agent.state_dict()), without_rng(remote.agent.state_dict()))
    assert [e["returns"] for e in local.evaluations] == [e["returns"] for e in remote.evaluations]


def test_a_distributed_run_needs_an_environment_factory(tmp_path):
    env = envs.make("Pendulum-v1", num_envs=1)
    with pytest.raises(ValueError, match="factory seed -> BatchedEnv"):
        algos.get("sac").train(sac_config(tmp_path / "run", workers=1), env=env, eval_env=env)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="workers must be >= 0"):
        algos.get("sac").train(sac_config(tmp_path / "run", workers=-1))
    env.close()


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_on_policy_run_collects_on_actors(tmp_path):
    ppo = algos.get("ppo")
    config = ppo.config_cls(**ppo.smoke, run_dir=str(tmp_path / "ppo"), progress=False,
                            distributed=DistributedConfig(workers=2))
    result = ppo.train(config, env=lambda seed: envs.make("Pendulum-v1", seed=seed))
    summary = json.loads((tmp_path / "ppo" / "summary.json").read_text())
    # Two actors with num_steps steps each per rollout: steps are counted over both.
    assert summary["transitions_per_worker"] == [summary["steps"] // 2] * 2
    assert float(result.agent.model.normalizer.count) > summary["steps"] - 1  # from both actors' observations


# ---------------------------------------------------------------------------------------- the solver pool
@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_ray_solver_pool_returns_what_the_local_pool_returns():
    net = solvers.ReLUNet.from_torch(random_relu_net(3, 2, hidden=(16, 8), seed=5), fixed_dim=3)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    action_set = ActionSet.box(-1.0, 1.0, dim=2)
    answers = {}
    for executor in ("process", "ray"):
        solver = solvers.make("scip", executor=executor, workers=2, skip_certified=False, time_limit=60.0)
        answers[executor] = solver.solve(net, x, action_set)
    local, remote = answers["process"], answers["ray"]
    assert (local.status != SolveStatus.TIME_LIMIT).all(), local.status  # certified within the gap
    assert (remote.status != SolveStatus.TIME_LIMIT).all(), remote.status
    torch.testing.assert_close(remote.values, local.values, atol=1e-3, rtol=0)  # the default gap
    assert (remote.upper_bounds >= local.values - 1e-6).all() and (local.upper_bounds >= remote.values - 1e-6).all()


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_a_lost_solver_task_is_retried_then_replaced(tmp_path):
    marker = tmp_path / "crashed-once"

    def crash_once(job: int) -> int:
        if job == 1 and not marker.exists():
            marker.write_text("x")
            os._exit(1)  # the worker process dies, as on a lost node
        return job * 10

    def crash_always(job: int) -> int:
        if job == 2:
            os._exit(1)
        return job * 10

    schedule = parallel.plan(3, workers=2, executor="ray")
    assert parallel.run(schedule, crash_once, [0, 1, 2], on_failure=lambda job: -1) == [0, 10, 20]
    assert marker.exists()
    assert parallel.run(schedule, crash_always, [0, 1, 2], on_failure=lambda job: -job) == [0, 10, -2]
    with pytest.raises(ray.exceptions.RayError):
        parallel.run(schedule, crash_always, [2])


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_a_max_q_batch_whose_workers_die_keeps_the_warm_start_with_status_lost(monkeypatch):
    import solvers.mip_solver

    def dies(job):
        os._exit(1)  # every try of every job loses its worker

    monkeypatch.setattr(solvers.mip_solver, "solve_problem", dies)
    net = solvers.ReLUNet.from_torch(random_relu_net(3, 2, hidden=(16, 8), seed=5), fixed_dim=3)
    x = torch.randn(3, 3, generator=torch.Generator().manual_seed(1))
    warm = torch.full((3, 2), 0.25)  # the action function's actions, in CAQL
    solver = solvers.make("scip", executor="ray", workers=2, skip_certified=False, incumbent=None, bounds="ibp",
                          time_limit=300.0)  # time for the retries, even on a loaded machine: a batch out of
    # time is TIME_LIMIT instead (60 s was too little with two other processes on two cores)
    result = solver.solve(net, x, ActionSet.box(-1.0, 1.0, dim=2), warm_start=warm)
    assert result.status_counts()["lost"] == 3
    torch.testing.assert_close(result.actions, warm.to(result.actions.dtype))
    assert (result.upper_bounds >= result.values).all()


def test_caql_sends_its_max_q_batches_to_ray_when_configured():
    from rlcore.algos.caql import CAQLConfig, make_agent

    env = envs.make("Pendulum-v1", num_envs=1)
    agent = make_agent(CAQLConfig(solver="scip", solver_options={"executor": "ray", "time_limit": 1.0}), env)
    assert agent.solver.executor == "ray"
    env.close()


# ---------------------------------------------------------------------------------------- failures
@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, ray_cluster):
    """Two pipelined actors, no failure: the run the others must reproduce."""
    run_dir = tmp_path_factory.mktemp("distributed") / "reference"
    config = dataclasses.replace(sac_config(run_dir, workers=2, batch_steps=5), total_steps=300)
    result = algos.get("sac").train(config)
    return config, result


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_killed_actors_lose_no_transition_and_deliver_none_twice(tmp_path, reference_run, monkeypatch):
    config, reference = reference_run
    rng, killed = random.Random(3), []
    receive = RolloutPool.receive

    def kill_then_receive(self, index):
        # At random batches, kill a random actor (Ray restarts it): the one whose batch is awaited (its request is
        # lost, or its result already sent) or another (killed mid-batch or while it waits for its next request).
        if len(killed) < 4 and rng.random() < 0.2:
            victim = rng.randrange(self.workers)
            ray.kill(self.actors[victim], no_restart=False)
            killed.append(victim)
        return receive(self, index)

    monkeypatch.setattr(RolloutPool, "receive", kill_then_receive)
    result = algos.get("sac").train(dataclasses.replace(config, run_dir=str(tmp_path / "killed")))
    summary = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert killed and summary["actor_restarts"] >= 1, "no actor was killed: the test tested nothing"
    # Every actor delivered batches 0..n-1 exactly once: the same count of transitions as without failures, and
    # the same transitions (the replay buffers are equal), so the learner ends bit for bit where it ended then.
    assert summary["transitions_per_worker"] == [150, 150]
    saved, expected = (load_latest_checkpoint(p) for p in (tmp_path / "killed", Path(reference.run_dir)))
    assert [s["seq"] for s in saved["pool"]["acknowledged"]] == [29, 29]
    assert states_equal(saved["replay"], expected["replay"])
    assert states_equal(result.agent.state_dict(), reference.agent.state_dict())


class Crash(Exception):
    pass


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_a_crashed_distributed_run_resumes_bit_for_bit(tmp_path, reference_run, monkeypatch):
    config, reference = reference_run
    save = RunSession.save

    def save_then_crash(self, agent, state):
        save(self, agent, state)
        if self.step == 150:  # the learner dies just after its first checkpoint, requests outstanding
            raise Crash

    monkeypatch.setattr(RunSession, "save", save_then_crash)
    with pytest.raises(Crash):
        algos.get("sac").train(dataclasses.replace(config, run_dir=str(tmp_path / "run")))
    monkeypatch.setattr(RunSession, "save", save)
    assert load_latest_checkpoint(tmp_path / "run")["pool"]["outstanding"] != [None, None]
    # The pool's layout is part of the run: a resume with another one is refused, naming the saved values.
    with pytest.raises(ValueError, match=r"trained with distributed\.workers 2 \(given 1\)"):
        algos.get("sac").train(dataclasses.replace(config, run_dir=None, resume=str(tmp_path / "run"),
                                                   distributed=DistributedConfig(workers=1)))
    resumed = algos.get("sac").train(dataclasses.replace(config, run_dir=None, resume=str(tmp_path / "run")))
    assert states_equal(resumed.agent.state_dict(), reference.agent.state_dict())
    assert [e["returns"] for e in resumed.evaluations] == [e["returns"] for e in reference.evaluations]


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_two_actors_learn_pendulum(tmp_path):
    config = SACConfig(total_steps=4_000, learning_starts=500, batch_size=128, eval_interval=4_000, eval_episodes=5,
                       checkpoint_interval=4_000, run_dir=str(tmp_path / "learn"), progress=False,
                       distributed=DistributedConfig(workers=2, batch_steps=16))
    started = time.perf_counter()
    result = algos.get("sac").train(config)
    # A random policy scores about -1200 on Pendulum-v1; SAC is near -150 after 5k local steps.
    assert result.final_return > -600, (result.final_return, time.perf_counter() - started)
