"""Scaling on one machine: environment steps and max-Q solves per second against the number of workers.

Four parts, each measured in one run on one machine and saved as it finishes (a part whose file exists in
``benchmarks/results/scaling_runs/`` is skipped; delete it to measure again):

* ``env_steps``: Hopper-v5 transitions per second, acting with a SAC policy, for 1, 2, ... workers: a local
  process pool (gymnasium's ``AsyncVectorEnv``, one subprocess per environment, acting in this process) and
  Ray rollout actors (:class:`rlcore.distributed.RolloutPool`, one environment each, batches of
  ``--batch-steps`` steps), with the efficiency per worker against one environment stepped in this process.
* ``ray_overhead``: what one batch costs on Ray beyond the environment: a request's round trip to an idle actor,
  and a one-step batch against one step in this process.
* ``maxq``: exact max-Q solves per second (SCIP, a (32, 16) Q-network with 3-dim actions, a batch of states)
  for the local process pool and Ray tasks, at 1, 2, ... workers.
* ``many_actors``: a distributed SAC run on Pendulum-v1 with more actors than cores (actors share the CPUs), to
  show where the learner (one update per environment step) becomes the bottleneck: environment steps per second
  and the fraction of the learner's time spent waiting for actors.

Reproduce: ``python benchmarks/scaling.py`` (``--workers 1 2 4`` on a bigger machine). ``--executor ray`` runs
the whole measurement as one Ray task (``--ray-address`` to join a cluster), so that it has a node to itself;
the default runs it in this process (which starts its own Ray for the Ray columns either way).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _grid import add_executor_arguments, run_grid, save_result

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = RESULTS / "scaling_runs"
PARTS = ("env_steps", "ray_overhead", "maxq", "many_actors")


def _ray(address: str | None) -> Any:
    from rlcore.distributed import ensure_ray

    ensure_ray(address)
    import ray

    return ray


def _sac_config(env_id: str, workers: int, batch_steps: int, **overrides: Any) -> Any:
    from rlcore.algos.sac import SACConfig
    from rlcore.distributed import DistributedConfig

    return SACConfig(env=env_id, progress=False, distributed=DistributedConfig(workers=workers, batch_steps=batch_steps,
                                                                               **overrides))


# ------------------------------------------------------------------------------------------------ parts
def env_steps(args: argparse.Namespace) -> dict[str, Any]:
    from rlcore import envs
    from rlcore.algos import sac
    from rlcore.distributed import RolloutPool, policy_weights

    seconds, rows = args.seconds, []

    def local(num_envs: int, vectorization: str) -> float:
        env = envs.make(args.env, num_envs=num_envs, vectorization=vectorization)
        agent = sac.make_agent(_sac_config(args.env, 0, 1), env)
        obs, _ = env.reset(seed=0)
        for _ in range(20):  # warm-up
            obs = env.step(agent.act(obs, 10**6))[0]
        steps, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            obs = env.step(agent.act(obs, 10**6))[0]
            steps += num_envs
        env.close()
        return steps / (time.perf_counter() - started)

    serial = local(1, "sync")
    rows.append({"executor": "serial", "workers": 1, "steps_per_second": serial, "efficiency": 1.0})
    for workers in args.workers:
        sps = local(workers, "async") if workers > 1 else local(1, "sync")
        rows.append({"executor": "process", "workers": workers, "steps_per_second": sps,
                     "efficiency": sps / (workers * serial)})
    _ray(args.ray_address)
    for workers in args.workers:
        config = _sac_config(args.env, workers, args.batch_steps)
        pool = RolloutPool(sac.make_agent, config, name=f"scaling-{workers}")
        probe_env = envs.make(args.env, num_envs=1)
        pool.push(policy_weights(sac.make_agent(config, probe_env)))
        probe_env.close()
        for index in range(workers):  # the first batch pays for the actors' start
            pool.request(index, 10**6, 1)
        for index in range(workers):
            pool.receive(index)
        steps, started = 0, time.perf_counter()
        for index in range(workers):
            pool.request(index, 10**6, args.batch_steps)
        while time.perf_counter() - started < seconds:
            for index in range(workers):
                steps += pool.receive(index)["data"]["reward"].numel()
                pool.request(index, 10**6, args.batch_steps)
        elapsed = time.perf_counter() - started
        for index in range(workers):
            pool.receive(index)
        pool.close()
        sps = steps / elapsed
        rows.append({"executor": "ray", "workers": workers, "steps_per_second": sps,
                     "efficiency": sps / (workers * serial)})
    return {"env": args.env, "batch_steps": args.batch_steps, "rows": rows}


def ray_overhead(args: argparse.Namespace) -> dict[str, Any]:
    from rlcore import envs
    from rlcore.algos import sac
    from rlcore.distributed import RolloutPool, policy_weights

    ray = _ray(args.ray_address)
    config = _sac_config(args.env, 1, 1)
    pool = RolloutPool(sac.make_agent, config, name="scaling-overhead")
    env = envs.make(args.env, num_envs=1)
    agent = sac.make_agent(config, env)
    pool.push(policy_weights(agent))
    pool.request(0, 10**6, 1)
    pool.receive(0)
    repeats = 200
    started = time.perf_counter()
    for _ in range(repeats):
        ray.get(pool.actors[0].ping.remote())
    ping = (time.perf_counter() - started) / repeats
    started = time.perf_counter()
    for _ in range(repeats):
        pool.request(0, 10**6, 1)
        pool.receive(0)
    one_step_batch = (time.perf_counter() - started) / repeats
    obs, _ = env.reset(seed=0)
    started = time.perf_counter()
    for _ in range(repeats):
        obs = env.step(agent.act(obs, 10**6))[0]
    local_step = (time.perf_counter() - started) / repeats
    pool.close()
    env.close()
    return {"env": args.env, "ping_ms": 1e3 * ping, "one_step_batch_ms": 1e3 * one_step_batch,
            "local_step_ms": 1e3 * local_step, "overhead_per_batch_ms": 1e3 * (one_step_batch - local_step)}


def maxq(args: argparse.Namespace) -> dict[str, Any]:
    import solvers

    _ray(args.ray_address)
    generator = torch.Generator().manual_seed(0)
    sizes = [8 + 3, 32, 16, 1]
    layers = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        layers += [torch.nn.Linear(fan_in, fan_out), torch.nn.ReLU()]
    module = torch.nn.Sequential(*layers[:-1])
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) / parameter.shape[-1] ** 0.5)
    net = solvers.ReLUNet.from_torch(module, fixed_dim=8)
    states = torch.randn(args.maxq_states, 8, generator=generator)
    action_set = solvers.ActionSet.box(-1.0, 1.0, dim=3)
    rows = []
    for executor in ("process", "ray"):
        for workers in args.workers:
            solver = solvers.make("scip", executor=executor, workers=workers, skip_certified=False,
                                  time_limit=120.0)
            solver.solve(net, states, action_set)  # start the pool / the Ray workers
            times = []
            for _ in range(args.repeats):
                result = solver.solve(net, states, action_set)
                times.append(result.solve_seconds)
            rows.append({"executor": executor, "workers": workers, "states": len(states),
                         "solves_per_second": len(states) / statistics.median(times),
                         "certified": int((result.status != solvers.SolveStatus.TIME_LIMIT).sum())})
    one = {r["executor"]: r["solves_per_second"] for r in rows if r["workers"] == 1}
    for row in rows:
        row["efficiency"] = row["solves_per_second"] / (row["workers"] * one[row["executor"]])
    return {"net": "(32, 16), 3-dim actions in [-1, 1]^3, 8-dim state", "rows": rows}


def many_actors(args: argparse.Namespace) -> dict[str, Any]:
    import dataclasses
    import tempfile

    from rlcore import algos
    from rlcore.algos.sac import SACConfig

    _ray(args.ray_address)
    cores = len(os.sched_getaffinity(0))
    rows = []
    for actors in args.actors:
        with tempfile.TemporaryDirectory() as folder:
            config = _sac_config("Pendulum-v1", actors, args.batch_steps, cpus_per_worker=min(1.0, cores / actors))
            config = dataclasses.replace(config, total_steps=args.learner_steps, learning_starts=500,
                                         eval_interval=10**9, checkpoint_interval=10**9, eval_episodes=1,
                                         run_dir=str(Path(folder) / "run"))
            algos.get("sac").train(config)
            summary = json.loads((Path(folder) / "run" / "summary.json").read_text())
        wall = summary["wall_seconds_this_session"]
        rows.append({"actors": actors, "actors_per_core": actors / cores,
                     "steps_per_second": summary["steps_per_second_this_session"],
                     "learner_waiting_fraction": summary["learner_seconds_waiting_for_actors"] / wall})
    # The learner's own pace: SAC updates per second in this process, one per environment step.
    from rlcore import envs
    from rlcore.algos import sac
    from rlcore.loops.replay import ReplayBuffer

    env = envs.make("Pendulum-v1", num_envs=1)
    agent = sac.make_agent(SACConfig(), env)
    replay = ReplayBuffer(10_000, seed=0)
    replay.add(torch.randn(5_000, 3), torch.rand(5_000, 1) * 4 - 2, torch.randn(5_000), torch.randn(5_000, 3),
               torch.zeros(5_000, dtype=torch.bool))
    for _ in range(20):
        agent.update(replay.sample(256))
    started, updates = time.perf_counter(), 300
    for _ in range(updates):
        agent.update(replay.sample(256))
    env.close()
    return {"env": "Pendulum-v1", "learner_steps": args.learner_steps, "cores": cores, "rows": rows,
            "learner_updates_per_second": updates / (time.perf_counter() - started)}


# ------------------------------------------------------------------------------------------------ report
def report(parts: dict[str, dict[str, Any]], machine: str) -> str:
    lines = ["# Scaling on one machine", "",
             f"Measured on {machine}, one torch thread per process, all parts in one invocation (times are comparable "
             "only within this file). Reproduce: `python benchmarks/scaling.py`.", ""]
    if "env_steps" in parts:
        part = parts["env_steps"]
        lines += [f"## Environment steps per second ({part['env']}, acting with a SAC policy)", "",
                  f"Efficiency per worker: steps/s divided by workers x steps/s of one environment stepped in this "
                  f"process. Ray actors send batches of {part['batch_steps']} steps.", "",
                  "| executor | workers | steps/s | efficiency per worker |", "|---|---|---|---|"]
        lines += [f"| {r['executor']} | {r['workers']} | {r['steps_per_second']:.0f} | {r['efficiency']:.2f} |"
                  for r in part["rows"]]
        lines.append("")
    if "ray_overhead" in parts:
        part = parts["ray_overhead"]
        lines += ["## Ray's overhead per batch", "",
                  f"- round trip of a request to an idle actor: {part['ping_ms']:.2f} ms",
                  f"- a one-step batch on an actor: {part['one_step_batch_ms']:.2f} ms, against one step in this "
                  f"process: {part['local_step_ms']:.2f} ms; overhead per batch {part['overhead_per_batch_ms']:.2f} ms "
                  "(send batches of many steps: the overhead is paid once per batch)", ""]
    if "maxq" in parts:
        part = parts["maxq"]
        lines += [f"## Exact max-Q solves per second (SCIP, {part['net']})", "",
                  "| executor | workers | states | solves/s | efficiency per worker | certified |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['executor']} | {r['workers']} | {r['states']} | {r['solves_per_second']:.1f} | "
                  f"{r['efficiency']:.2f} | {r['certified']}/{r['states']} |" for r in part["rows"]]
        lines.append("")
    if "many_actors" in parts:
        part = parts["many_actors"]
        lines += [f"## Many actors per core: where the learner becomes the bottleneck ({part['env']}, SAC)", "",
                  f"{part['cores']} cores, {part['learner_steps']} steps per run, one update per step. The learner "
                  f"alone runs {part['learner_updates_per_second']:.0f} updates/s, the ceiling on steps/s here.", "",
                  "| actors | actors per core | steps/s | learner time waiting for actors |", "|---|---|---|---|"]
        lines += [f"| {r['actors']} | {r['actors_per_core']:.1f} | {r['steps_per_second']:.0f} | "
                  f"{100 * r['learner_waiting_fraction']:.0f} % |" for r in part["rows"]]
        lines.append("")
    return "\n".join(lines) + "\n"


def plot(parts: dict[str, dict[str, Any]]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    panels = [(k, t) for k, t in (("env_steps", "environment steps/s"), ("maxq", "max-Q solves/s")) if k in parts]
    if not panels:
        return
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
    for axis, (key, title) in zip(axes[0], panels, strict=True):
        metric = "steps_per_second" if key == "env_steps" else "solves_per_second"
        for executor in ("process", "ray"):
            rows = [r for r in parts[key]["rows"] if r["executor"] == executor]
            axis.plot([r["workers"] for r in rows], [r[metric] for r in rows], marker="o", label=executor)
        axis.set_xlabel("workers")
        axis.set_title(title)
        axis.legend()
    figure.tight_layout()
    figure.savefig(RESULTS / "scaling.png", dpi=120)


def measure_all(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    RUNS.mkdir(parents=True, exist_ok=True)
    functions = {"env_steps": env_steps, "ray_overhead": ray_overhead, "maxq": maxq, "many_actors": many_actors}
    parts = {}
    for name in args.parts:
        path = RUNS / f"{name}.json"
        if not path.exists():
            print(f"measuring {name} ...", flush=True)
            save_result(path, json.dumps(functions[name](args), indent=1))
        parts[name] = json.loads(path.read_text())
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cores = len(os.sched_getaffinity(0))
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    parser.add_argument("--workers", nargs="+", type=int, default=sorted({1, 2, cores} - {0}))
    parser.add_argument("--actors", nargs="+", type=int, default=[1, 2, 4, 8],
                        help="actors of the many-actors part (several per core)")
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--batch-steps", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8.0, help="measuring time per environment-steps cell")
    parser.add_argument("--maxq-states", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--learner-steps", type=int, default=3_000)
    add_executor_arguments(parser)
    args = parser.parse_args()
    (parts,) = run_grid(measure_all, [args], workers=0, executor=args.executor, ray_address=args.ray_address,
                        cpus_per_job=cores)
    machine = f"{platform.processor() or platform.machine()}, {cores} cores"
    settings = {k: v for k, v in vars(args).items() if k not in ("executor", "ray_address")}
    save_result(RESULTS / "scaling.json", json.dumps({"machine": machine, "settings": settings, **parts}, indent=1))
    save_result(RESULTS / "scaling.md", report(parts, machine))
    plot(parts)
    print((RESULTS / "scaling.md").read_text())


if __name__ == "__main__":
    main()
