"""Time limits are budgets for a whole ``solve`` call and are kept; worker pools survive a script
without an ``if __name__ == "__main__":`` guard."""

import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import solvers
from solvers import ActionSet, SolveStatus
from solvers.bounds import compute_bounds
from solvers.mip_backends import JobBudget

SLACK_S = 0.5  # "within the limit plus a small overhead", loosely: the machine is shared


def _hard_problem(states=16):
    """A random (64, 64) net with 6 action dims: neither bnb nor a MIP closes a zero gap in a second."""
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(11 + 6, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64),
                                 torch.nn.ReLU(), torch.nn.Linear(64, 1))
    net = solvers.ReLUNet.from_torch(module, fixed_dim=11)
    return net, torch.randn(states, 11, generator=torch.Generator().manual_seed(1)), ActionSet.box(-1.0, 1.0, dim=6)


def _timed(solver, net, x, aset):
    tic = time.perf_counter()
    result = solver.solve(net, x, aset)
    return result, time.perf_counter() - tic


def _check_valid(net, x, aset, result):
    assert aset.contains(result.actions).all()
    torch.testing.assert_close(result.values, net(x, result.actions), atol=1e-5, rtol=0)
    samples = aset.sample(4000, torch.Generator().manual_seed(0))
    sampled = net(x.repeat_interleave(4000, 0), samples.repeat(x.shape[0], 1)).reshape(x.shape[0], -1).amax(1)
    assert (result.upper_bounds >= sampled - 1e-6).all()
    assert (result.upper_bounds >= result.values).all()


@pytest.mark.parametrize(("name", "limit", "options"), [
    ("bnb", 0.01, {}), ("bnb", 0.3, {}), ("bnb", 0.3, {"dtype": "float32"}),
    ("scip", 0.05, {"workers": 1}), ("scip", 0.3, {"workers": 1}), ("ortools-highs", 0.1, {"workers": 1}),
    ("exact", 0.3, {})])
def test_time_limits_are_kept_for_the_whole_batch(name, limit, options):
    net, x, aset = _hard_problem()
    solver = solvers.make(name, gap=0.0, time_limit=limit, **options)
    solver.solve(net, x[:1], aset)  # first-call costs (imports) are not the limit's business
    result, elapsed = _timed(solver, net, x, aset)
    assert elapsed <= limit + SLACK_S, f"{name} took {elapsed:.3f} s with time_limit={limit}"
    _check_valid(net, x, aset, result)
    assert (result.status == SolveStatus.TIME_LIMIT).all()  # a zero gap on this net is not closed in time


def test_mip_states_share_the_budget_and_unreached_ones_keep_a_valid_answer():
    net, x, aset = _hard_problem()
    crown = compute_bounds("crown", net, x, aset, dtype=torch.float64).output_upper
    solver = solvers.make("scip", gap=0.0, time_limit=1e-3, workers=1, skip_certified=False)
    result, elapsed = _timed(solver, net, x, aset)
    assert elapsed <= 1e-3 + SLACK_S
    _check_valid(net, x, aset, result)
    assert (result.status == SolveStatus.TIME_LIMIT).all()  # never "optimal" without a MIP
    assert (result.upper_bounds.double() <= crown + 1e-6).all()  # the bound of the bound propagation step
    # With time for every state, the budget is shared: no state's MIP is skipped.
    roomy = solvers.make("scip", gap=1e-3, time_limit=30.0, workers=1, skip_certified=False)
    small = solvers.ReLUNet.from_torch(torch.nn.Sequential(torch.nn.Linear(14, 8), torch.nn.ReLU(),
                                                           torch.nn.Linear(8, 1)), fixed_dim=11)
    answer = roomy.solve(small, x[:4], ActionSet.box(-1.0, 1.0, dim=3))
    assert (answer.status != SolveStatus.TIME_LIMIT).all()


def test_a_pool_keeps_the_batch_budget_even_while_it_starts():
    net, x, aset = _hard_problem(states=8)
    solver = solvers.make("scip", gap=0.0, time_limit=0.3, workers=2)
    result, elapsed = _timed(solver, net, x, aset)  # may include starting the pool's processes
    assert elapsed <= 0.3 + SLACK_S
    _check_valid(net, x, aset, result)


def test_job_budgets_are_fair_shares_of_what_is_left():
    now = time.time()
    assert JobBudget(now + 8.0, rounds_left=4).seconds() == pytest.approx(2.0, abs=0.05)
    assert JobBudget(now + 8.0, rounds_left=1).seconds() == pytest.approx(8.0, abs=0.05)
    assert JobBudget(now - 1.0, rounds_left=3).seconds() <= 0


SCRIPT = textwrap.dedent('''
    import sys, threading, time
    import torch
    import solvers
    from solvers import ActionSet

    if "thread" in sys.argv:  # another thread alive: forking is not safe any more
        threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
    torch.manual_seed(0)
    q = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    net = solvers.ReLUNet.from_torch(q, fixed_dim=3)
    states = torch.randn(4, 3)
    box = ActionSet.box(-1.0, 1.0, dim=2)
    pooled = solvers.make("scip", workers=2, skip_certified=False).solve(net, states, box)
    again = solvers.make("scip", workers=2, skip_certified=False).solve(net, states, box)
    serial = solvers.make("scip", workers=1, skip_certified=False).solve(net, states, box)
    assert torch.allclose(pooled.values, serial.values, atol=2e-3), (pooled.values, serial.values)
    assert torch.allclose(again.values, serial.values, atol=2e-3)
    print("pools", sorted(solvers.parallel._POOLS))
    print("OK", [round(v, 4) for v in pooled.values.tolist()])
''')


@pytest.mark.parametrize("mode", ["plain", "thread"])
def test_a_script_without_a_main_guard_works(tmp_path, mode):
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run([sys.executable, str(script), mode], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "OK" in done.stdout
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr[-3000:]
    warnings = done.stderr.count("RuntimeWarning")
    assert warnings <= 1, done.stderr
    forked = "(2, 'fork')" in done.stdout
    if forked:  # solved on a forked pool: nothing to warn about
        assert warnings == 0, done.stderr
    else:  # solved in the script's process, with one warning that names the fix
        assert warnings == 1 and 'if __name__ == "__main__":' in done.stderr, done.stderr
    if mode == "thread":
        assert not forked
    elif sys.platform.startswith("linux"):
        assert forked, done.stdout


def test_plan_starts_no_pool_where_none_is_needed(tmp_path):
    from solvers import parallel

    assert parallel.plan(1, workers=4).executor == "serial"
    assert parallel.plan(8, workers=1).executor == "serial"
    assert parallel.plan(8, workers=4, executor="serial").executor == "serial"
    assert parallel.plan(3, workers=4).concurrency in (1, 3)  # a pool of 3, or this process
    script = tmp_path / "guarded.py"
    script.write_text('import solvers\nsolve = 1\nif "__main__" == __name__:\n    run = 2\n    more = 3\nelse:\n'
                      '    other = 4\n')
    assert parallel._guarded_lines(str(script), 0) == ((4, 5),)
    script.write_text("print(1)\n")
    assert parallel._guarded_lines(str(script), 1) == ()
