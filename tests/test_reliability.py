"""What a new user hits first: no silent overwrite, checkpoints that survive damage, no orphan run directories,
seeded Python `random`, one definition of the reported spread, solver options from the command line."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_algorithm_contract import assert_same_state

from rlcore import cli
from rlcore.algos.caql import CAQLConfig, train
from rlcore.algos.solver_options import parse_solver_options
from rlcore.loops import EnvConfig
from rlcore.loops.checkpoint import CheckpointError, load_latest_checkpoint
from rlcore.loops.evaluation import summarize

SMALL = dict(total_steps=450, learning_starts=100, eval_interval=150, checkpoint_interval=150, eval_episodes=3,
             log_interval=150, progress=False)


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def test_a_run_directory_that_holds_a_run_is_refused_and_left_unchanged(tmp_path):
    train(CAQLConfig(**{**SMALL, "total_steps": 300}, run_dir=str(tmp_path / "run")))
    before = snapshot(tmp_path / "run")
    with pytest.raises(ValueError, match=r"already holds a run; continue it with `--resume .*run`, or give a new"):
        train(CAQLConfig(**{**SMALL, "total_steps": 150}, run_dir=str(tmp_path / "run")))
    assert snapshot(tmp_path / "run") == before
    done = subprocess.run([sys.executable, "-m", "rlcore.cli", "train", "caql", "--total-steps", "150",
                           "--run-dir", str(tmp_path / "run"), "--no-progress"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "already holds a run" in done.stderr and "Traceback" not in done.stderr
    assert snapshot(tmp_path / "run") == before


@pytest.mark.parametrize("env_id", ["Foo-v0", "CartPole-v1"])
def test_bad_environments_leave_no_run_directory(tmp_path, env_id):
    done = subprocess.run([sys.executable, "-m", "rlcore.cli", "train", "caql", "--env", env_id, "--log-root",
                           str(tmp_path / "logs"), "--no-progress"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and env_id in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "logs").exists() or not any((tmp_path / "logs").iterdir())


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "zero":
        path.write_bytes(b"")
    else:  # garbled: the zip's central directory overwritten with noise
        noise = bytes(random.Random(0).getrandbits(8) for _ in range(4096))
        path.write_bytes(data[:-4096] + noise)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return train(CAQLConfig(**SMALL, run_dir=str(tmp_path_factory.mktemp("uninterrupted") / "full")))


@pytest.mark.parametrize("how", ["truncated", "zero", "garbled"])
def test_resume_falls_back_to_the_previous_checkpoint_and_ends_bit_identical(tmp_path, how, uninterrupted):
    full = uninterrupted
    train(CAQLConfig(**{**SMALL, "total_steps": 300}, run_dir=str(tmp_path / "cut")))
    assert (tmp_path / "cut" / "checkpoint.prev.pt").is_file()
    damage(tmp_path / "cut" / "checkpoint.pt", how)
    fallback = r"checkpoint\.pt cannot be read .* Using the previous checkpoint .*step 150"
    with pytest.warns(RuntimeWarning, match=fallback):
        resumed = train(CAQLConfig(**SMALL, resume=str(tmp_path / "cut")))
    assert_same_state(full.agent.state_dict(), resumed.agent.state_dict())
    assert [e["returns"] for e in resumed.evaluations] == [e["returns"] for e in full.evaluations]
    steps = [json.loads(line)["step"] for line in (tmp_path / "cut" / "evaluations.jsonl").read_text().splitlines()]
    assert steps == [150, 300, 450]


def test_damaged_checkpoints_are_one_line_errors(tmp_path):
    train(CAQLConfig(**{**SMALL, "total_steps": 150}, run_dir=str(tmp_path / "run")))
    damage(tmp_path / "run" / "checkpoint.pt", "truncated")  # the only checkpoint: nothing to fall back to
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt cannot be read \(.*\); the file is damaged"):
        load_latest_checkpoint(tmp_path / "run")
    for command in (["eval", str(tmp_path / "run")], ["train", "caql", "--resume", str(tmp_path / "run")]):
        done = subprocess.run([sys.executable, "-m", "rlcore.cli", *command], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_python_random_is_seeded_and_resumed(tmp_path):
    from rlcore.loops.session import RunSession

    RunSession("caql", CAQLConfig(seed=7, progress=False, run_dir=str(tmp_path / "a"))).close()
    first = random.random()
    random.seed(7)
    assert first == random.random()
    result = train(CAQLConfig(**{**SMALL, "total_steps": 150}, run_dir=str(tmp_path / "run")))
    state = load_latest_checkpoint(result.run_dir)["rng"]["python"]
    random.setstate(state)
    expected = random.random()
    train(CAQLConfig(**{**SMALL, "total_steps": 150}, resume=str(tmp_path / "run")))  # finished: only restores
    assert random.random() == expected


def test_one_definition_of_the_spread(tmp_path, capsys):
    result = train(CAQLConfig(**{**SMALL, "total_steps": 150}, run_dir=str(tmp_path / "run")))
    last = result.evaluations[-1]
    returns = torch.tensor(last["returns"], dtype=torch.float64)
    assert last["return_std"] == pytest.approx(float(returns.std(correction=0)))
    assert summarize(last["returns"]) == pytest.approx((last["return_mean"], last["return_std"]))
    assert summarize([3.0]) == (3.0, 0.0)
    evaluated = cli.evaluate_run(result.run_dir, episodes=3)
    assert evaluated["return_std"] == pytest.approx(last["return_std"], abs=1e-4)
    assert cli.main(["eval", str(result.run_dir), "--episodes", "3"]) == 0
    out = capsys.readouterr().out
    assert f"± {last['return_std']:.1f} (population std)" in out and "episode seeds 1000004..1000006" in out


def test_solver_options_take_ints_floats_strings_and_bools(tmp_path):
    assert parse_solver_options(["presolve=false", "num_starts=4", "step=0.5", "backend=scip", "flag=True"]) == {
        "presolve": False, "num_starts": 4, "step": 0.5, "backend": "scip", "flag": True}
    assert parse_solver_options(['{"presolve": false, "time_limit": 0.5}']) == {"presolve": False, "time_limit": 0.5}
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        parse_solver_options(["presolve"])
    import tyro

    config = tyro.cli(CAQLConfig, args=["--solver-options", "num_starts=4", "iterations=10"])
    assert config.solver_options == {"num_starts": 4, "iterations": 10}
    with pytest.raises(ValueError, match=r"solver 'ga' takes no time_limit; solver_time_limit applies to .*bnb"):
        train(CAQLConfig(**SMALL, solver="ga", solver_time_limit=1.0, run_dir=str(tmp_path / "run")))
    assert not (tmp_path / "run").exists()


def test_a_run_directory_in_use_by_another_process_is_refused(tmp_path):
    from rlcore.loops.run_dir import RunDirInUse, RunDirLock

    run = tmp_path / "run"
    train(CAQLConfig(**{**SMALL, "total_steps": 150}, run_dir=str(run)))
    before = snapshot(run)
    other = RunDirLock(run)  # another training process, as flock sees it: a separate open file
    other.acquire()
    try:
        with pytest.raises(RunDirInUse, match=rf"{run} is in use by another training process \(pid {os.getpid()}\)"):
            train(CAQLConfig(**SMALL, resume=str(run)))
        done = subprocess.run([sys.executable, "-m", "rlcore.cli", "train", "caql", "--resume", str(run),
                               "--no-progress"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and "is in use by another training process" in done.stderr
        assert "Traceback" not in done.stderr
        assert snapshot(run) == before
    finally:
        other.release()
    assert train(CAQLConfig(**SMALL, resume=str(run))).evaluations[-1]["step"] == SMALL["total_steps"]


def test_a_run_that_raised_leaves_its_directory_free_to_resume(tmp_path, monkeypatch):
    from rlcore.loops.session import RunSession

    advance = RunSession.advance

    def failing(self, new_step, *args, **kwargs):
        if new_step > 200:
            raise RuntimeError("simulated failure")
        return advance(self, new_step, *args, **kwargs)

    monkeypatch.setattr(RunSession, "advance", failing)
    with pytest.raises(RuntimeError, match="simulated failure"):
        train(CAQLConfig(**SMALL, run_dir=str(tmp_path / "run")))
    monkeypatch.setattr(RunSession, "advance", advance)
    resumed = train(CAQLConfig(**SMALL, resume=str(tmp_path / "run")))  # in this process: not "in use"
    assert resumed.evaluations[-1]["step"] == SMALL["total_steps"]


def test_resume_refuses_a_changed_task_seed_or_network_and_changes_nothing(tmp_path):
    run = tmp_path / "run"
    train(CAQLConfig(**{**SMALL, "total_steps": 150}, run_dir=str(run)))
    before = snapshot(run)
    for flags, named in ((["--hidden-sizes", "32", "16"], "hidden_sizes None (given [32, 16])"),
                         (["--seed", "5"], "seed 1 (given 5)"),
                         (["--action-bound", "0.5"], "env.action_bound None (given 0.5)")):
        done = subprocess.run([sys.executable, "-m", "rlcore.cli", "train", "caql", "--resume", str(run), *flags,
                               "--no-progress"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and named in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert "drop those settings to continue it" in done.stderr
        assert snapshot(run) == before
    with pytest.raises(ValueError, match=r"trained with learning_rate 0\.001 \(given 0\.01\)"):
        train(CAQLConfig(**{**SMALL, "learning_rate": 1e-2}, resume=str(run)))
    assert snapshot(run) == before
    # The budget and the schedule of evaluations and checkpoints may change.
    resumed = train(CAQLConfig(**{**SMALL, "total_steps": 300, "eval_interval": 75}, resume=str(run)))
    assert [e["step"] for e in resumed.evaluations] == [150, 225, 300]


def test_a_run_stopped_before_its_first_checkpoint_starts_again_in_place(tmp_path, uninterrupted):
    from rlcore.loops.session import RunSession

    advance = RunSession.advance

    def stopped(self, new_step, *args, **kwargs):
        if new_step > 100:
            raise KeyboardInterrupt
        return advance(self, new_step, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RunSession, "advance", stopped)
        with pytest.raises(KeyboardInterrupt):
            train(CAQLConfig(**SMALL, run_dir=str(tmp_path / "run")))
    assert not (tmp_path / "run" / "checkpoint.pt").exists() and (tmp_path / "run" / "config.json").exists()
    with pytest.warns(RuntimeWarning, match="has no checkpoint yet .* starts again from step 0"):
        again = train(CAQLConfig(**SMALL, resume=str(tmp_path / "run")))
    assert [e["returns"] for e in again.evaluations] == [e["returns"] for e in uninterrupted.evaluations]
    assert_same_state(uninterrupted.agent.state_dict(), again.agent.state_dict())


def test_async_vector_environments_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match=r"vectorization='async' cannot train: .* Use vectorization='sync'"):
        train(CAQLConfig(**SMALL, num_envs=2, env=EnvConfig("Pendulum-v1", vectorization="async"),
                         log_root=str(tmp_path / "logs")))
    assert not (tmp_path / "logs").exists()


def test_a_torn_last_evaluation_is_dropped_and_damaged_files_are_named(tmp_path, uninterrupted):
    from rlcore.loops.run_dir import read_evaluations

    train(CAQLConfig(**{**SMALL, "total_steps": 300}, run_dir=str(tmp_path / "run")))
    evaluations = tmp_path / "run" / "evaluations.jsonl"
    lines = evaluations.read_text().splitlines()
    # Killed while writing the evaluation at step 300, before that step's checkpoint: the last is step 150's.
    evaluations.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])
    (tmp_path / "run" / "checkpoint.prev.pt").replace(tmp_path / "run" / "checkpoint.pt")
    with pytest.warns(RuntimeWarning, match="its last line is torn"):
        resumed = train(CAQLConfig(**SMALL, resume=str(tmp_path / "run")))
    assert [e["returns"] for e in resumed.evaluations] == [e["returns"] for e in uninterrupted.evaluations]
    evaluations.write_text("{oops\n" + evaluations.read_text())
    with pytest.raises(ValueError, match=r"evaluations\.jsonl line 1 is not a JSON record"):
        read_evaluations(tmp_path / "run")
    (tmp_path / "run" / "config.json").write_text('{"algo": "caql", "con')
    done = subprocess.run([sys.executable, "-m", "rlcore.cli", "eval", str(tmp_path / "run")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "config.json is damaged" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(("settings", "message"), [
    ({"learning_starts": -5}, "learning_starts must be >= 0, got -5"),
    ({"tolerance_decay": 0.0}, r"tolerance_decay must be in \(0, 1\], got 0.0"),
    ({"noise_std": -1.0}, "noise_std=-1.0"),
    ({"env": EnvConfig("Pendulum-v1", action_set="l2_ball")}, "action_set='l2_ball' needs action_bound"),
    ({"env": EnvConfig("PointMass-v0")}, "'PointMass-v0' is a task of the torch backend.*--backend torch"),
    ({"device": "cdua"}, "device must be a torch device such as 'cpu', 'cuda' or 'cuda:1', got 'cdua'"),
    ({"solver": "ga", "solver_options": {"starts": 3}}, "'ga': no option.* starts; its options: .*num_starts"),
])
def test_bad_settings_name_the_field_the_value_and_the_fix_and_write_nothing(tmp_path, settings, message):
    with pytest.raises(ValueError, match=message):
        train(CAQLConfig(**{**SMALL, **settings}, log_root=str(tmp_path / "logs")))
    assert not (tmp_path / "logs").exists()
