"""Q-networks from real CAQL runs, saved for the max-Q solver benchmark (``maxq_solvers.py --nets real``).

For every task and hidden size, one CAQL run (gradient-ascent max-Q, the default configuration otherwise)
is trained in stages: early (just after learning starts), middle and late. After each stage the run's
Q-network is saved with 64 next-states drawn from its replay buffer, the states its Bellman max-Q was
being solved on. The run is continued from its checkpoint between stages (``resume``), so the three nets
are one training run seen three times.

    python benchmarks/collect_q_networks.py                 # all tasks, one process per run
    python benchmarks/collect_q_networks.py --workers 2

Writes ``benchmarks/data/q_networks/<Task>-<hidden>-<step>.pt`` (a plain dict of tensors and numbers,
readable with ``torch.load(path, weights_only=True)``) and ``manifest.json``. A net whose file exists is not
trained again, so an interrupted collection continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "q_networks"
TASKS = {"hopper": "Hopper-v5", "halfcheetah": "HalfCheetah-v5", "walker2d": "Walker2d-v5"}
HIDDEN = {"32x16": (32, 16), "64x64": (64, 64)}
STAGES = {"early": 2_000, "middle": 8_000, "late": 20_000}
STATES = 64


def net_path(task: str, hidden: str, step: int) -> Path:
    return DATA / f"{TASKS[task]}-{hidden}-{step}.pt"


def collect(spec: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    from rlcore.algos.caql import CAQLConfig, train
    from rlcore.loops import EnvConfig

    task, hidden = spec["task"], spec["hidden"]
    started, saved = time.perf_counter(), []
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        for number, (stage, step) in enumerate(STAGES.items()):
            config = CAQLConfig(env=EnvConfig(TASKS[task]), hidden_sizes=HIDDEN[hidden], total_steps=step,
                                eval_interval=step, eval_episodes=2, checkpoint_interval=step, seed=spec["seed"],
                                hard_update_interval=5_000,  # the copy interval the committed networks trained with
                                action_hidden_sizes=(32, 16),  # and their action function
                                progress=False, **({"resume": str(run)} if number else {"run_dir": str(run)}))
            train(config)
            checkpoint = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)
            replay = checkpoint["replay"]
            generator = torch.Generator().manual_seed(spec["seed"] + step)
            rows = torch.randperm(int(replay["size"]), generator=generator)[:STATES]
            record = {"task": TASKS[task], "hidden_sizes": list(HIDDEN[hidden]), "stage": stage, "step": step,
                      "seed": spec["seed"], "obs_dim": int(replay["obs"].shape[1]),
                      "action_dim": int(replay["actions"].shape[1]),
                      "state_dict": {k: v.clone() for k, v in checkpoint["agent"]["q"].items()},
                      "states": replay["next_obs"][rows].clone()}
            path = net_path(task, hidden, step)
            partial = path.with_suffix(".tmp")
            torch.save(record, partial)
            partial.replace(path)  # a crash never leaves half a file under the final name
            saved.append(path.name)
    return {**spec, "files": saved, "seconds": time.perf_counter() - started}


def load_q_network(path: Path):
    """``(module, states, record)`` of a saved net: the Q-network as an ``nn.Sequential`` on ``[state, action]``,
    its 64 replay states ``[64, obs_dim]`` and the record's metadata (task, hidden sizes, stage, step, dims)."""
    import torch
    from torch import nn

    record = torch.load(path, weights_only=True)
    sizes = [record["obs_dim"] + record["action_dim"], *record["hidden_sizes"], 1]
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    module = nn.Sequential(*layers)
    module.load_state_dict(record["state_dict"])
    return module, record["states"].float(), {k: v for k, v in record.items() if k not in ("state_dict", "states")}


def write_manifest() -> None:
    import torch

    rows = []
    for path in sorted(DATA.glob("*.pt")):
        record = torch.load(path, weights_only=True)
        rows.append({"file": path.name, **{k: record[k] for k in ("task", "hidden_sizes", "stage", "step", "seed",
                                                                  "obs_dim", "action_dim")}})
    (DATA / "manifest.json").write_text(json.dumps(rows, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--hidden", nargs="+", choices=list(HIDDEN), default=list(HIDDEN))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (one torch thread each)")
    from _grid import add_executor_arguments, run_grid

    add_executor_arguments(parser)
    args = parser.parse_args()

    DATA.mkdir(parents=True, exist_ok=True)
    specs = [{"key": f"{task}-{hidden}", "task": task, "hidden": hidden, "seed": args.seed}
             for task in args.tasks for hidden in args.hidden]
    todo = [s for s in specs if not all(net_path(s["task"], s["hidden"], step).exists() for step in STAGES.values())]
    print(f"{len(specs)} runs, {len(specs) - len(todo)} done, {len(todo)} to do", flush=True)

    def done(result: dict) -> None:
        write_manifest()
        print(f"{result['key']}: {', '.join(result['files'])} in {result['seconds']:.0f} s", flush=True)

    run_grid(collect, todo, workers=args.workers, executor=args.executor, ray_address=args.ray_address,
             on_result=done)
    write_manifest()


if __name__ == "__main__":
    main()
