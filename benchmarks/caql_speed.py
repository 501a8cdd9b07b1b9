"""CAQL updates per second: this checkout against an earlier revision, and each max-Q solver against GA, in one run.

Every case is a pair of CAQL configurations measured side by side (one process and one torch thread each, so
that both see the same machine load): the agent is built as ``rlcore train caql`` builds it, its replay is
filled with 2,000 uniformly random transitions of the task, and ``--updates`` updates on batches of the
default size are timed after 20 untimed ones. Updates per second exclude environment steps and evaluations.
The "before" side of a pair runs the code of a git revision (``git archive`` into a temporary folder).

    python benchmarks/caql_speed.py                 # the missing pairs, then the report
    python benchmarks/caql_speed.py --summarise-only

Results: ``benchmarks/results/caql_speed.{json,md}``; one JSON per pair and repeat in ``caql_speed_runs/``.

``--executor ray`` runs each (pair, repeat) as one Ray task with 2 CPUs, both sides at once as in a local run, so
that a pair's two sides share one node and its load (``--ray-address`` to join a cluster, whose nodes need this
repository, with its git history, and the environment at the same paths: a task unpacks its own "before" tree);
pairs run side by side as the cluster has room, and the pair files are written here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _grid import add_executor_arguments, run_grid, save_result
from _revisions import unpack

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
RUNS = RESULTS / "caql_speed_runs"
BEFORE_REV = "f61e5b9"
"""The last commit before the CAQL speed work (GA with 16 starts x 30 autograd steps, GA on Pendulum)."""

# name: (env, action bound, {config overrides}); "rev" picks the code: "before" or "now".
SIDES: dict[str, tuple[str, str, float | None, dict]] = {
    "pendulum-ga-before": ("before", "Pendulum-v1", None, {"solver": "ga"}),
    "pendulum-ga": ("now", "Pendulum-v1", None, {"solver": "ga"}),
    "pendulum-pwl1d": ("now", "Pendulum-v1", None, {"solver": "pwl1d"}),
    "hopper-ga-before": ("before", "Hopper-v5", 0.25, {"solver": "ga"}),
    "hopper-ga": ("now", "Hopper-v5", 0.25, {"solver": "ga"}),
    "hopper-bnb": ("now", "Hopper-v5", 0.25, {"solver": "bnb"}),
    "hopper-bnb-hinge-filter": ("now", "Hopper-v5", 0.25, {"solver": "bnb", "loss": "hinge", "dual_filter": True}),
    "halfcheetah-ga": ("now", "HalfCheetah-v5", 0.25, {"solver": "ga"}),
    "halfcheetah-bnb-hinge-filter": ("now", "HalfCheetah-v5", 0.25,
                                     {"solver": "bnb", "loss": "hinge", "dual_filter": True,
                                      "solver_time_limit": 1.0}),
}
PAIRS: dict[str, tuple[str, str]] = {
    "pendulum: GA now / GA before": ("pendulum-ga", "pendulum-ga-before"),
    "pendulum: pwl1d (exact) / GA now": ("pendulum-pwl1d", "pendulum-ga"),
    "hopper: GA now / GA before": ("hopper-ga", "hopper-ga-before"),
    "hopper: bnb (exact) / GA now": ("hopper-bnb", "hopper-ga"),
    "hopper: bnb + hinge + dual filter / GA now": ("hopper-bnb-hinge-filter", "hopper-ga"),
    "halfcheetah: bnb + hinge + dual filter (1 s limit) / GA now": ("halfcheetah-bnb-hinge-filter", "halfcheetah-ga"),
}

CHILD = r"""
import json, sys, time
import torch
torch.set_num_threads(1)
from rlcore import envs
from rlcore.algos import caql
from rlcore.loops import EnvConfig
from rlcore.loops.replay import ReplayBuffer
env_id, bound, overrides, updates = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4])
# The (32, 16) networks every committed pair was measured with (the default of both revisions then).
config = caql.CAQLConfig(env=EnvConfig(env_id, action_bound=bound), seed=0, hidden_sizes=(32, 16),
                         action_hidden_sizes=(32, 16), **overrides)
env = envs.make(env_id, num_envs=1, action_set=config.env.make_action_set(), seed=0)
agent = caql.make_agent(config, env)
replay = ReplayBuffer(10_000, "cpu", seed=0)
obs, _ = env.reset(seed=0)
generator = torch.Generator().manual_seed(0)
for _ in range(2_000):
    actions = env.action_set.project(env.action_set.sample(1, generator))
    next_obs, reward, terminated, truncated, info = env.step(actions)
    replay.add(obs, info["applied_actions"], reward, info["final_obs"], terminated)
    obs = next_obs
for _ in range(20):
    agent.update(replay.sample(config.batch_size))
start = time.perf_counter()
for _ in range(updates):
    agent.update(replay.sample(config.batch_size))
print(json.dumps({"updates_per_second": updates / (time.perf_counter() - start)}))
"""


def launch(side: str, before_tree: Path, updates: int) -> subprocess.Popen:
    rev, env_id, bound, overrides = SIDES[side]
    source = before_tree if rev == "before" else ROOT
    environment = {**os.environ, "PYTHONPATH": str(source), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-c", CHILD, env_id, json.dumps(bound), json.dumps(overrides), str(updates)]
    return subprocess.Popen(command, env=environment, cwd=source, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def updates_for(side: str, base: int) -> int:
    # The exact solvers take far longer per update; fewer updates keep a pair's two sides about equally long.
    return max(base // 10, 20) if "bnb" in side else base


def measure_pair(job: dict) -> dict:
    """Both sides of one pair at once; the pair's record, or ``{"error": ...}`` if a side failed.

    ``job["before_tree"]``: the unpacked "before" code, or None to unpack it here (a Ray task, maybe on another
    node)."""
    if job["before_tree"] is None:
        with tempfile.TemporaryDirectory(prefix="rlcore-caql-speed-") as tmp:
            return measure_pair({**job, "before_tree": str(unpack(job["before_rev"], Path(tmp)))})
    pair, updates = job["pair"], job["updates"]
    jobs = {side: launch(side, Path(job["before_tree"]), updates_for(side, updates)) for side in PAIRS[pair]}
    record: dict[str, object] = {"pair": pair, "repeat": job["repeat"], "before_rev": job["before_rev"]}
    for side, process in jobs.items():
        stdout, stderr = process.communicate()
        if process.returncode != 0:
            return {"error": f"{side} failed:\n{stderr[-3000:]}"}
        record[side] = json.loads(stdout.strip().splitlines()[-1])["updates_per_second"]
    return {"path": job["path"], "record": record}


def run_missing(repeats: int, rev: str, updates: int, pairs: list[str], executor: str = "process",
                ray_address: str | None = None) -> None:
    """The missing (pair, repeat) measurements, one after another in this process (``executor="process"``) or as
    Ray tasks of 2 CPUs each."""
    RUNS.mkdir(parents=True, exist_ok=True)
    jobs = [{"pair": pair, "repeat": repeat, "before_rev": rev, "updates": updates, "before_tree": None,
             "path": str(RUNS / f"pair{index}-{repeat}.json")}
            for repeat in range(repeats) for index, pair in enumerate(PAIRS)
            if pair in pairs and not (RUNS / f"pair{index}-{repeat}.json").exists()]

    def save(done: dict) -> None:
        if "error" in done:
            raise SystemExit(done["error"])
        record = done["record"]
        save_result(Path(done["path"]), json.dumps(record, indent=2))
        first, second = PAIRS[record["pair"]]
        print(f"{record['pair']} #{record['repeat']}: {record[first]:.1f} / {record[second]:.1f} updates/s",
              flush=True)

    if executor == "ray":
        run_grid(measure_pair, jobs, workers=0, executor=executor, ray_address=ray_address, on_result=save,
                 cpus_per_job=2)
        return
    with tempfile.TemporaryDirectory(prefix="rlcore-caql-speed-") as tmp:
        before_tree = str(unpack(rev, Path(tmp)))
        run_grid(measure_pair, [{**job, "before_tree": before_tree} for job in jobs], workers=0, on_result=save)


def summarise() -> None:
    records = [json.loads(p.read_text()) for p in sorted(RUNS.glob("*.json"))]
    rows, missing = [], []
    for pair, (first, second) in PAIRS.items():
        mine = [r for r in records if r["pair"] == pair]
        if not mine:
            missing.append(pair)
            continue
        ratios = [r[first] / r[second] for r in mine]
        rows.append({"pair": pair, "first": first, "second": second, "repeats": len(mine),
                     "first_updates_per_second": statistics.median(r[first] for r in mine),
                     "second_updates_per_second": statistics.median(r[second] for r in mine),
                     "ratio": statistics.median(ratios), "pair_ratios": ratios})
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    (RESULTS / "caql_speed.json").write_text(json.dumps({"before_rev": BEFORE_REV, "machine": machine, "rows": rows,
                                                         "missing": missing, "sides": SIDES}, indent=2))
    lines = ["# CAQL updates per second", "",
             f"Each row: two configurations side by side in one run, one process and one torch thread each, on "
             f"{machine}; replay of 2,000 random transitions, batch 64, updates only (no environment steps). "
             f"\"before\": commit `{BEFORE_REV}` (GA with 16 starts x 30 autograd steps). Ratio: median over repeats "
             "of the per-pair ratio first / second. Reproduce: `python benchmarks/caql_speed.py`.", "",
             "The Q-networks here are nearly untrained, and an exact solver certifies their maximum in a few rounds; "
             "on trained agents (finished runs, `caql_speed_trained.md`) `bnb` is much slower against GA.", "",
             "| pair | repeats | first (updates/s) | second (updates/s) | ratio | per-pair ratios |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        pairs = ", ".join(f"{r:.2f}" for r in row["pair_ratios"])
        lines.append(f"| {row['pair']} | {row['repeats']} | {row['first_updates_per_second']:.1f} | "
                     f"{row['second_updates_per_second']:.1f} | **{row['ratio']:.2f}** | {pairs} |")
    if missing:
        lines += ["", f"Not run yet: {'; '.join(missing)}."]
    lines += ["", "Configurations (CAQL defaults otherwise; bounds are the constraint box half-width):", ""]
    lines += [f"- `{side}`: {env_id}, bound {bound}, {overrides} ({'rev ' + BEFORE_REV if rev == 'before' else 'now'})"
              for side, (rev, env_id, bound, overrides) in SIDES.items()]
    (RESULTS / "caql_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--updates", type=int, default=500, help="timed updates per side (exact solvers: a tenth)")
    parser.add_argument("--before", default=BEFORE_REV, help="git revision of the 'before' code")
    parser.add_argument("--pairs", nargs="*", default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument("--summarise-only", action="store_true")
    add_executor_arguments(parser)
    args = parser.parse_args()
    if not args.summarise_only:
        run_missing(args.repeats, args.before, args.updates, args.pairs, args.executor, args.ray_address)
    summarise()


if __name__ == "__main__":
    main()
