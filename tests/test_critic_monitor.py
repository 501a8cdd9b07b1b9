"""The off-policy loop's critic monitor: each evaluation record carries the mean Q of the updates since the previous
evaluation, and TensorBoard shows it next to the evaluation return (resume equality of the records, q_mean
included, is checked for every algorithm by tests/test_algorithm_contract.py)."""

import math

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rlcore.algos.sac import SACConfig, train


def test_evaluations_carry_the_critics_mean_q(tmp_path):
    result = train(SACConfig(env="Pendulum-v1", total_steps=200, learning_starts=120, random_steps=120, batch_size=32,
                             hidden_sizes=(16, 16), eval_interval=100, eval_episodes=1, checkpoint_interval=200,
                             log_interval=100, progress=False, run_dir=str(tmp_path / "run")))
    records = {e["step"]: e for e in result.evaluations}
    assert "q_mean" not in records[100]  # no update before step 120: nothing to report
    # Pendulum's rewards are in [-16.3, 0]: an early critic's mean Q is negative and finite.
    assert math.isfinite(records[200]["q_mean"]) and records[200]["q_mean"] < 0
    events = EventAccumulator(str(result.run_dir)).Reload()
    logged = events.Scalars("eval/q_mean")
    assert [e.step for e in logged] == [200] and math.isclose(logged[0].value, records[200]["q_mean"], rel_tol=1e-6)
    assert "eval/return_mean" in events.Tags()["scalars"]
