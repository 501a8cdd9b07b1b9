"""One contract for every registered algorithm: registering it in ``rlcore.algos.ALGORITHMS`` puts it here.

Each algorithm runs its ``smoke`` settings on Pendulum-v1 and must: finish a short run; resume from its
half-way checkpoint to exactly (bit for bit) the same agent and evaluations; be evaluated from its run
directory by ``rlcore eval`` reproducing the run's last evaluation; and reject a bad config, or an action space
it cannot use, with a ``ValueError`` before any run directory exists.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from rlcore import algos, cli, envs

NAMES = sorted(algos.ALGORITHMS)


def _config(name: str, tmp_path, label: str, **overrides: Any) -> Any:
    algorithm = algos.get(name)
    return algorithm.config_cls(**{**algorithm.smoke, "progress": False, **overrides},
                                **({} if "resume" in overrides else {"run_dir": str(tmp_path / label)}))


def flatten(state: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf of a nested state (dicts, lists, tuples) by its path."""
    if isinstance(state, dict):
        return {k: v for key, value in state.items() for k, v in flatten(value, f"{prefix}{key}/").items()}
    if isinstance(state, (list, tuple)):
        return {k: v for i, value in enumerate(state) for k, v in flatten(value, f"{prefix}{i}/").items()}
    return {prefix: state}


def assert_same_state(a: dict[str, Any], b: dict[str, Any]) -> None:
    flat_a, flat_b = flatten(a), flatten(b)
    assert flat_a.keys() == flat_b.keys()
    for key, value in flat_a.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, flat_b[key]), key
        else:
            assert value == flat_b[key], key


@pytest.mark.parametrize("name", NAMES)
def test_short_run_resumes_bit_for_bit_and_evaluates(name, tmp_path):
    algorithm = algos.get(name)
    total = algorithm.smoke["total_steps"]
    half = algorithm.smoke["checkpoint_interval"]
    full = algorithm.train(_config(name, tmp_path, "full"))
    assert [e["step"] for e in full.evaluations][-1] == total
    assert all(torch.isfinite(torch.tensor(e["returns"])).all() for e in full.evaluations)

    first_half = algorithm.train(_config(name, tmp_path, "resumed", total_steps=half))
    resumed = algorithm.train(_config(name, tmp_path, "", resume=str(tmp_path / "resumed")))
    assert_same_state(full.agent.state_dict(), resumed.agent.state_dict())
    clocks = ("wall_seconds", "train_seconds")
    strip = [{k: v for k, v in e.items() if k not in clocks} for e in full.evaluations]
    assert strip == [{k: v for k, v in e.items() if k not in clocks} for e in resumed.evaluations]
    # The clocks go on from the checkpoint: a resumed run's evaluations count its seconds over both sessions.
    for clock in clocks:
        seconds = [e[clock] for e in resumed.evaluations]
        assert seconds == sorted(seconds), clock
        assert seconds[-1] > first_half.evaluations[-1][clock], clock
    lines = (tmp_path / "resumed" / "evaluations.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [e["step"] for e in full.evaluations]

    # `rlcore eval` on the run directory, on the run's own evaluation seeds, reproduces the last evaluation.
    result = cli.evaluate_run(full.run_dir, episodes=algorithm.smoke["eval_episodes"])
    assert result["returns"] == pytest.approx(full.evaluations[-1]["returns"], abs=1e-4)
    assert result["return_std"] == pytest.approx(full.evaluations[-1]["return_std"], abs=1e-4)
    assert cli.main(["eval", str(full.run_dir), "--episodes", "2"]) == 0
    # load_agent gives back the trained agent itself: the same parameters, the checkpoint's step, the run's config.
    trained = algos.load_agent(full.run_dir)
    assert_same_state(trained.agent.state_dict(), full.agent.state_dict())
    assert trained.step == total and trained.algorithm.name == name and trained.config.total_steps == total


def test_loading_the_agent_of_a_run_on_environment_objects_needs_the_environment(tmp_path):
    make = lambda n: envs.make("Pendulum-v1", num_envs=n)  # noqa: E731
    result = algos.get("caql").train(_config("caql", tmp_path, "objects"), env=make(1), eval_env=make(2))
    with pytest.raises(ValueError, match="trained on an environment object; pass the environment its agent is to"):
        algos.load_agent(result.run_dir)
    trained = algos.load_agent(result.run_dir, env=make(1))
    assert_same_state(trained.agent.state_dict(), result.agent.state_dict())


@pytest.mark.parametrize("name", NAMES)
def test_bad_config_is_rejected_before_anything_is_written(name, tmp_path):
    with pytest.raises(ValueError, match="total_steps must be >= 1"):
        algos.get(name).train(_config(name, tmp_path, "bad", total_steps=0))
    with pytest.raises(ValueError, match="unknown or unavailable environment id 'Foo-v0'"):
        algos.get(name).train(_config(name, tmp_path, "unknown", env="Foo-v0"))
    assert not (tmp_path / "bad").exists() and not (tmp_path / "unknown").exists()


@pytest.mark.parametrize("name", [n for n in NAMES if not algos.get(n).discrete_actions])
def test_continuous_only_algorithms_refuse_a_discrete_space(name, tmp_path):
    with pytest.raises(ValueError, match=f"CartPole-v1 has a Discrete action space; {name} needs a continuous Box"):
        algos.get(name).train(_config(name, tmp_path, "cartpole", env="CartPole-v1"))
    assert not (tmp_path / "cartpole").exists()
