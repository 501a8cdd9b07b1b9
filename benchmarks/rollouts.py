"""Environment steps per second with random actions, per backend, task, batch size and device.

Every cell builds ``rlcore.envs.make(env_id, num_envs, backend=..., device=...)``, takes a few warm-up
steps (compilation, CUDA graph capture), then steps with uniformly random actions from the action set
(drawn on the environment's device, as a training loop would) until ``--seconds`` have passed or
``--max-steps`` batched steps were taken. The figure is ``num_envs * batched steps / seconds``,
auto-resets included; on CUDA the clock stops after a device synchronisation.

Cells that cannot run here are listed with the reason rather than silently left out: async vector
envs above ``--max-async-envs`` processes (one process per environment), gymnasium sync above
``--max-sync-envs``, and cells whose estimated time per batched step (extrapolated from the previous
batch size) exceeds ``--max-step-seconds``.

    python benchmarks/rollouts.py                        # the committed run: CPU, and CUDA when present
    python benchmarks/rollouts.py --envs Hopper-v5 --num-envs 1 16 --seconds 2

Writes ``benchmarks/results/rollouts.json`` and ``rollouts.md``.

``--executor ray`` runs the whole measurement as one Ray task (``--ray-address`` to join a cluster): its cells
compare backends on one machine and each cell's skip estimate reads the previous one, so they stay together on one
node. The task asks for as many CPUs as the largest async vector env runs processes (up to ``--max-async-envs``)
and, when ``--devices`` names CUDA, for one GPU; without ``--devices`` the node picks (CUDA when it has one). The
report, describing that node, is written here.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch
from _grid import add_executor_arguments, run_grid

from rlcore import envs
from rlcore.envs.mjwarp import MJWARP_ENVS, mujoco_warp_available
from rlcore.envs.torch_envs import TORCH_ENVS

RESULTS = Path(__file__).parent / "results"
TARGETS = ("On one H100-class GPU: at least 1,000,000 Hopper-v5 steps/s with MuJoCo Warp, and at least 50x "
           "gymnasium's async vector env on the CPU of the same machine.")


def backends_for(env_id: str, device: str) -> list[tuple[str, str]]:
    """(label, backend) pairs that apply to ``env_id`` on ``device``; gymnasium runs on the CPU only."""
    # Async first: forking its worker processes fails (ENOMEM) once this process holds thousands of envs.
    pairs = [("gymnasium-async", "gymnasium"), ("gymnasium-sync", "gymnasium")] if device == "cpu" else []
    if env_id in TORCH_ENVS:
        pairs.append(("torch", "torch"))
    if env_id in MJWARP_ENVS and mujoco_warp_available():
        pairs.append(("mjwarp", "mjwarp"))
    return pairs


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(env_id: str, label: str, backend: str, device: str, num_envs: int, seconds: float, max_steps: int,
            warmup: int) -> dict[str, Any]:
    """Build one environment and time random-action steps; returns one result row."""
    vectorization = "async" if label == "gymnasium-async" else "sync"
    start = time.perf_counter()
    env = envs.make(env_id, num_envs=num_envs, seed=0, device=device, backend=backend, vectorization=vectorization)
    generator = torch.Generator(device=env.device).manual_seed(0)
    try:
        for _ in range(warmup):
            env.step(env.action_set.sample(num_envs, generator))
        _sync(device)
        setup = time.perf_counter() - start
        steps, begin = 0, time.perf_counter()
        while steps < max_steps:
            env.step(env.action_set.sample(num_envs, generator))
            steps += 1
            if steps % 8 == 0 or steps < 8:
                _sync(device)
                if time.perf_counter() - begin >= seconds:
                    break
        _sync(device)
        elapsed = time.perf_counter() - begin
    finally:
        env.close()
        del env
        gc.collect()
    return {"env": env_id, "backend": label, "device": device, "num_envs": num_envs, "batched_steps": steps,
            "seconds": round(elapsed, 4), "setup_seconds": round(setup, 2),
            "steps_per_second": num_envs * steps / elapsed, "seconds_per_batched_step": elapsed / steps}


def skipped(env_id: str, label: str, device: str, num_envs: int, reason: str) -> dict[str, Any]:
    return {"env": env_id, "backend": label, "device": device, "num_envs": num_envs, "skipped": reason}


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for device in args.devices:
        for env_id in args.envs:
            for label, backend in backends_for(env_id, device):
                previous: dict[str, Any] | None = None
                for num_envs in args.num_envs:
                    reason = None
                    if label == "gymnasium-async" and num_envs > args.max_async_envs:
                        reason = f"one process per environment: above --max-async-envs={args.max_async_envs}"
                    elif label == "gymnasium-sync" and num_envs > args.max_sync_envs:
                        reason = f"above --max-sync-envs={args.max_sync_envs} (throughput is flat in num_envs)"
                    elif previous is not None and "seconds_per_batched_step" in previous:
                        estimate = previous["seconds_per_batched_step"] * num_envs / previous["num_envs"]
                        if estimate > args.max_step_seconds:
                            reason = (f"estimated {estimate:.1f} s per batched step (linear from num_envs="
                                      f"{previous['num_envs']}) > --max-step-seconds={args.max_step_seconds}")
                    if reason is not None:
                        row = skipped(env_id, label, device, num_envs, reason)
                    else:
                        try:
                            row = measure(env_id, label, backend, device, num_envs, args.seconds, args.max_steps,
                                          args.warmup)
                        except Exception as error:  # a failing cell is reported, the others still run
                            row = skipped(env_id, label, device, num_envs, f"error: {error!r}"[:300])
                        previous = row
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    return rows


def machine() -> dict[str, Any]:
    import gymnasium
    import mujoco

    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "gymnasium": gymnasium.__version__, "mujoco": mujoco.__version__, "cpu": _cpu_name(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    if mujoco_warp_available():
        import mujoco_warp
        import warp

        info.update(warp=warp.config.version, mujoco_warp=getattr(mujoco_warp, "__version__", _dist("mujoco-warp")))
    return info


def _dist(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def write_markdown(path: Path, report: dict[str, Any]) -> None:
    sizes = report["settings"]["num_envs"]
    lines = ["# Rollout throughput: environment steps per second, random actions", "",
             f"Machine: {report['machine']['cpu']} ({report['machine']['cpu_count']} logical CPUs, "
             f"torch threads {report['machine']['torch_threads']}); GPU: {report['machine']['cuda'] or 'none'}.",
             f"Versions: torch {report['machine']['torch']}, gymnasium {report['machine']['gymnasium']}, mujoco "
             f"{report['machine']['mujoco']}, warp {report['machine'].get('warp')}, mujoco-warp "
             f"{report['machine'].get('mujoco_warp')}.", "",
             f"Each cell: up to {report['settings']['seconds']} s or {report['settings']['max_steps']} batched steps "
             f"after {report['settings']['warmup']} warm-up steps; `-` = skipped (reasons below).", ""]
    for note in report["notes"]:
        lines.append(f"- {note}")
    lines.append("")
    for env_id in report["settings"]["envs"]:
        lines += [f"## {env_id}", "", "| backend | device | " + " | ".join(f"N={n}" for n in sizes) + " |",
                  "|---|---|" + "---:|" * len(sizes)]
        keys = sorted({(r["backend"], r["device"]) for r in report["results"] if r["env"] == env_id})
        for backend, device in keys:
            cells = []
            for n in sizes:
                row = next((r for r in report["results"] if (r["env"], r["backend"], r["device"], r["num_envs"])
                            == (env_id, backend, device, n)), None)
                cells.append("-" if row is None or "skipped" in row else f"{row['steps_per_second']:,.0f}")
            lines.append(f"| {backend} | {device} | " + " | ".join(cells) + " |")
        lines.append("")
    reasons = [r for r in report["results"] if "skipped" in r]
    if reasons:
        lines += ["## Skipped cells", ""]
        lines += [f"- {r['env']} {r['backend']} {r['device']} N={r['num_envs']}: {r['skipped']}" for r in reasons]
        lines.append("")
    lines += ["## Targets (issue 7)", "", TARGETS, "", report["target_status"], ""]
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--envs", nargs="+", default=["Pendulum-v1", "Hopper-v5", "Humanoid-v5"])
    parser.add_argument("--num-envs", nargs="+", type=int, default=None,
                        help="batch sizes (default 1 16 256 4096, and 65536 when a GPU is present)")
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when available")
    parser.add_argument("--seconds", type=float, default=3.0, help="timing budget per cell")
    parser.add_argument("--max-steps", type=int, default=2000, help="batched steps per cell at most")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation, graph capture)")
    parser.add_argument("--max-async-envs", type=int, default=16, help="largest async vector env (processes)")
    parser.add_argument("--max-sync-envs", type=int, default=4096, help="largest gymnasium sync vector env")
    parser.add_argument("--max-step-seconds", type=float, default=20.0,
                        help="skip a cell whose estimated time per batched step exceeds this")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--note", nargs="*", default=[], help="free-text notes for the report (e.g. the machine)")
    add_executor_arguments(parser)
    args = parser.parse_args()
    (report,) = run_grid(measure_all, [args], workers=0, executor=args.executor, ray_address=args.ray_address,
                         cpus_per_job=_processes_at_once(args),
                         gpus_per_job=1.0 if any(d.startswith("cuda") for d in args.devices or []) else 0.0)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rollouts.json").write_text(json.dumps(report, indent=2))
    write_markdown(args.out / "rollouts.md", report)
    print(f"wrote {args.out / 'rollouts.json'} and {args.out / 'rollouts.md'}")


def _processes_at_once(args: argparse.Namespace) -> int:
    """The most processes a cell runs at once: an async vector env runs one per environment."""
    if args.devices and "cpu" not in args.devices:
        return 1
    return max([1, *(n for n in args.num_envs or [1, 16, 256, 4096] if n <= args.max_async_envs)])


def measure_all(args: argparse.Namespace) -> dict[str, Any]:
    """Every cell, one after another in this process; the report (on the machine that runs it)."""
    torch.set_num_threads(1)  # the figures are per core for the CPU backends, as the baseline
    has_cuda = torch.cuda.is_available()
    args.devices = args.devices or (["cpu", "cuda"] if has_cuda else ["cpu"])
    args.num_envs = args.num_envs or ([1, 16, 256, 4096, 65536] if has_cuda else [1, 16, 256, 4096])

    started, load_at_start = time.perf_counter(), [round(x, 2) for x in os.getloadavg()]
    rows = run(args)
    notes = [f"Total run time {time.perf_counter() - started:.0f} s; load average (1, 5, 15 min) at the start "
             f"{load_at_start}, at the end {[round(x, 2) for x in os.getloadavg()]} on {os.cpu_count()} logical CPUs.",
             *args.note]
    if not has_cuda:
        notes.append("No GPU was available for this run: every figure is CPU-only, and the GPU rows (torch and "
                     "mjwarp on CUDA, N=65536) are absent. MuJoCo Warp on the CPU is a correctness path (it "
                     "runs the GPU kernels on the host), not a fast one.")
    if not mujoco_warp_available():
        notes.append("mujoco-warp is not installed here: no mjwarp rows.")
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                if k not in ("executor", "ray_address")}
    return {"settings": settings, "machine": machine(), "notes": notes, "results": rows, "targets": TARGETS,
            "target_status": _target_status(rows, has_cuda)}


def _target_status(rows: list[dict[str, Any]], has_cuda: bool) -> str:
    def best(backend: str, device: str) -> float | None:
        values = [r["steps_per_second"] for r in rows if r["env"] == "Hopper-v5" and r["backend"] == backend
                  and r["device"] == device and "steps_per_second" in r]
        return max(values) if values else None

    if not has_cuda:
        return "Not measured: this run had no GPU."
    gpu, cpu_async = best("mjwarp", "cuda"), best("gymnasium-async", "cpu")
    if gpu is None:
        return "Not measured: no mjwarp Hopper-v5 figure on CUDA."
    ratio = f"{gpu / cpu_async:.0f}x gymnasium async ({cpu_async:,.0f}/s)" if cpu_async else "no async figure"
    met = gpu >= 1e6 and (cpu_async is not None and gpu >= 50 * cpu_async)
    return f"mjwarp Hopper-v5 on {torch.cuda.get_device_name(0)}: {gpu:,.0f} steps/s, {ratio}: " + \
        ("met." if met else "not met.")


if __name__ == "__main__":
    main()
