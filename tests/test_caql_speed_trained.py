"""benchmarks/caql_speed_trained.py: a finished CAQL run's agent, timed under each solver configuration."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from caql_speed_trained import CONFIGS, measure  # noqa: E402

from rlcore.algos.caql import CAQLConfig, train  # noqa: E402
from rlcore.loops import EnvConfig  # noqa: E402


def test_every_configuration_is_timed_on_the_runs_own_agent(tmp_path):
    run_dir = tmp_path / "run"
    train(CAQLConfig(env=EnvConfig("Pendulum-v1", action_bound=0.5), total_steps=300, learning_starts=100,
                     eval_interval=300, eval_episodes=1, checkpoint_interval=300, progress=False,
                     run_dir=str(run_dir)))
    entry = measure(run_dir, updates=2, rounds=2, names=list(CONFIGS))
    assert entry["step"] == 300 and set(entry["configs"]) == set(CONFIGS)
    for name, row in entry["configs"].items():
        assert len(row["per_round"]) == 2 and all(rate > 0 for rate in row["per_round"])
        # bnb asks for the dynamic tolerance (its solver takes a gap); GA does not.
        assert (row["mean_tolerance"] is None) == (name == "ga"), name
    assert entry["configs"]["ga"]["ratio_to_ga"] == 1.0
    assert all(entry["configs"][name]["mean_tolerance"] > 0 for name in ("bnb", "bnb-constant-tolerance"))


def test_a_run_of_another_algorithm_is_refused(tmp_path):
    from rlcore.algos.sac import SACConfig
    from rlcore.algos.sac import train as train_sac

    run_dir = tmp_path / "sac"
    train_sac(SACConfig(env="Pendulum-v1", total_steps=200, learning_starts=100, random_steps=100, batch_size=32,
                        hidden_sizes=(32, 32), eval_interval=200, eval_episodes=1, checkpoint_interval=200,
                        progress=False, run_dir=str(run_dir)))
    with pytest.raises(ValueError, match="is a sac run; this benchmark times CAQL runs"):
        measure(run_dir, updates=1, rounds=1, names=["ga"])
