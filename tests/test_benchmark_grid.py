"""benchmarks/_grid.py: a benchmark's grid runs the same in local processes and as Ray tasks.

Every script in benchmarks/ takes ``--executor {process,ray}`` and ``--ray-address``; the helpers call a function
on each job (``run_grid``) or run a child process per job (``run_commands``), and hand each result to the driver
as the job finishes."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # the scripts import their helpers as top-level modules, so does this test

import _grid  # noqa: E402

SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_"))


@pytest.fixture(scope="module")
def help_runs():
    """Every script's ``--help``, all at once, started by the first test so that they run beside the others."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    processes = {script.name: subprocess.Popen([sys.executable, str(script), "--help"], stdout=subprocess.PIPE,
                                               stderr=subprocess.STDOUT, text=True, env=env)
                 for script in SCRIPTS}
    yield processes
    for process in processes.values():
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.fixture
def ray_session(ray_cluster):
    return ray_cluster


@pytest.mark.usefixtures("help_runs")
def test_run_grid_in_local_processes_and_in_this_process():
    jobs = list(range(7))
    seen: list[int] = []
    results = _grid.run_grid(_grid.square, jobs, workers=2, on_result=seen.append)
    assert sorted(results) == [x * x for x in jobs]
    assert sorted(seen) == sorted(results)  # once per job, in the driver
    assert _grid.run_grid(_grid.square, jobs, workers=0) == [x * x for x in jobs]  # in order, here
    assert _grid.run_grid(_grid.square, [], workers=2) == []


@pytest.mark.slow
def test_run_grid_as_ray_tasks_gives_the_process_results(ray_session):
    jobs = list(range(7))
    seen: list[int] = []
    results = _grid.run_grid(_grid.square, jobs, workers=1, executor="ray", on_result=seen.append)
    assert sorted(results) == sorted(_grid.run_grid(_grid.square, jobs, workers=0))
    assert sorted(seen) == sorted(results) and len(seen) == len(jobs)
    assert ray_session.is_initialized()  # a Ray that the caller started is left running
    # A job that asks for more CPUs than any node has would never start: it gets the largest node's.
    with pytest.warns(UserWarning, match="largest Ray node has 2"):
        assert _grid.run_grid(_grid.square, [3], workers=0, executor="ray", cpus_per_job=8) == [9]


WRITE = "import pathlib, sys; print('writing'); pathlib.Path(sys.argv[1]).write_text(sys.argv[2])"
FAIL = "import sys; print('boom'); sys.exit(3)"


@pytest.mark.parametrize("executor", ["process", pytest.param("ray", marks=pytest.mark.slow)])
def test_run_commands(executor, tmp_path, request):
    if executor == "ray":
        request.getfixturevalue("ray_session")
    ok = _grid.Command([sys.executable, "-c", WRITE, str(tmp_path / "out.json"), '{"x": 1}'],
                       result=tmp_path / "out.json", log=tmp_path / "ok.log")
    bad = _grid.Command([sys.executable, "-c", FAIL], result=tmp_path / "never.json", log=tmp_path / "bad.log")
    seen: dict[str, int] = {}
    done = _grid.run_commands([ok, bad], workers=2, executor=executor, poll_seconds=0.1,
                              on_done=lambda command, code: seen.__setitem__(command.log.stem, code))
    assert seen == {"ok": 0, "bad": 3}
    assert sorted(code for _, code in done) == [0, 3]
    assert (tmp_path / "out.json").read_text() == '{"x": 1}'
    assert not (tmp_path / "never.json").exists()
    assert (tmp_path / "ok.log").read_text().strip() == "writing"
    assert (tmp_path / "bad.log").read_text().strip() == "boom"


def test_save_result_writes_atomically_and_only_when_new(tmp_path):
    path = tmp_path / "runs" / "a.json"
    _grid.save_result(path, "1")
    assert path.read_text() == "1" and not (tmp_path / "runs" / "a.json.tmp").exists()
    before = path.stat().st_mtime_ns
    _grid.save_result(path, "1")  # a task on this machine wrote it already
    assert path.stat().st_mtime_ns == before
    _grid.save_result(path, "2")
    assert path.read_text() == "2"


def test_executor_arguments(monkeypatch, capsys):
    parser = argparse.ArgumentParser()
    _grid.add_executor_arguments(parser)
    args = parser.parse_args([])
    assert (args.executor, args.ray_address) == ("process", None)
    args = parser.parse_args(["--executor", "process", "--ray-address", "auto"])
    assert (args.executor, args.ray_address) == ("process", "auto")
    with pytest.raises(SystemExit):
        parser.parse_args(["--executor", "dask"])
    # Without Ray, asking for it is a usage error that names the fix.
    real_find_spec = _grid.importlib.util.find_spec
    monkeypatch.setattr(_grid.importlib.util, "find_spec", lambda name: None if name == "ray" else real_find_spec(name))
    capsys.readouterr()
    with pytest.raises(SystemExit):
        parser.parse_args(["--executor", "ray"])
    assert "pip install 'rlcore[distributed]'" in capsys.readouterr().err
    with pytest.raises(ModuleNotFoundError, match=r"rlcore\[distributed\]"):
        _grid.run_grid(_grid.square, [1], workers=0, executor="ray")


def test_every_benchmark_script_takes_the_executor_options(help_runs):
    assert len(help_runs) >= 13
    for name, process in help_runs.items():
        output, _ = process.communicate(timeout=120)
        assert process.returncode == 0, f"{name} --help failed:\n{output[-2000:]}"
        assert "--executor" in output and "--ray-address" in output, f"{name} --help lacks the executor options"


def test_pool_workers_end_with_the_script_that_started_them(tmp_path):
    import signal
    import time

    script = tmp_path / "grid_script.py"
    script.write_text(f"""import os, sys, time
sys.path.insert(0, {str(BENCHMARKS)!r})
import _grid

def sleeper(path):
    with open(path, "w") as handle:
        handle.write(str(os.getpid()))
    time.sleep(120)

if __name__ == "__main__":
    _grid.run_grid(sleeper, [sys.argv[1]], workers=1)
""")
    pid_file = tmp_path / "worker.pid"
    parent = subprocess.Popen([sys.executable, str(script), str(pid_file)])
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    worker = int(pid_file.read_text())
    parent.send_signal(signal.SIGKILL)  # as `kill -9 <script>`: nothing in the script gets to clean up
    parent.wait()

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return not Path(f"/proc/{pid}/stat").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"

    deadline = time.monotonic() + 15
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(worker), "the pool's worker outlived the script that started it"


def test_run_location_resumes_a_checkpointed_run_and_clears_anything_else(tmp_path):
    checkpointed, stale = tmp_path / "checkpointed", tmp_path / "stale"
    checkpointed.mkdir()
    (checkpointed / "checkpoint.pt").write_bytes(b"\0")
    stale.mkdir()
    (stale / "events.out").write_text("a run that never checkpointed")

    assert _grid.run_location(checkpointed) == {"resume": str(checkpointed)}
    assert (checkpointed / "checkpoint.pt").exists()
    assert _grid.run_location(stale) == {"run_dir": str(stale)}
    assert not stale.exists()
    # A run that cannot resume (SB3, --force) starts afresh even where a checkpoint is.
    assert _grid.run_location(checkpointed, resumable=False) == {"run_dir": str(checkpointed)}
    assert not checkpointed.exists()
