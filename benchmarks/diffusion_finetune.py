"""Diffusion fine-tuning on both shipped test beds: methods, trainable parts, the alignment-fidelity trade-off,
and Focus-N-Fix against global fine-tuning at equal defect reduction.

Parts (each run one process, one torch thread; a run whose result file exists is skipped, so the benchmark can be
run in pieces):

* ``ring``: DPOK, PPO, RWR and f-divergence PG on the ring (reward ``x``, β = 0.5, seed 0) against the exact
  optimum ``p* ∝ p_ref exp(r/β)``: the share of the way from the reference's reward to the optimum's and the
  output KL over the optimum's; DPOK with the full model, LoRA (rank 4) and the side network (width 64, and
  width 16 at β 0.5 and 1, to read its reward at LoRA's KL with fewer parameters than LoRA); DPOK over
  β ∈ {0.1, 0.25, 0.5, 1, 2} beside the optimum's curve (the alignment-fidelity trade-off); and the four methods
  under a KL budget (``FinetuneConfig.kl_target`` = 0.95x the β = 0.5 optimum's KL, β starting at 0.5 and
  adapted, the step size decaying over the last 30 % of the iterations), seeds 0-2: the issue's target read
  at the optimum's KL.
* ``digits``: the four methods making strokes thicker (``thickness``, β = 0.01) with the held-out classifier's
  probability of the prompted class as the reward-hacking monitor, and DPOK with each trainable part.
* ``fix``: the zeros' defect (``-defect_score``, DPOK, β = 0.01): Focus-N-Fix for 30 iterations against global
  fine-tuning for 1 to 30; the change outside the region (mean |Δ| between fine-tuned and original samples drawn
  with the same noise, outside the detector's map of the original) of global fine-tuning is interpolated at
  Focus-N-Fix's defect rate.

Every run records its wall time per iteration and the process's peak resident memory (on a GPU, the peak
allocated device memory instead). Writes ``benchmarks/results/diffusion_finetune.{json,md}``, PNGs (the
trade-off, sample grids before and after) and one JSON per run under ``diffusion_finetune_runs/``.

    python benchmarks/diffusion_finetune.py                    # every missing run, then the report
    python benchmarks/diffusion_finetune.py --parts ring       # one part
    python benchmarks/diffusion_finetune.py --report-only

Targets (issue 24): every method within 90 % of the exact optimum's reward at no more than its KL on the ring;
the side network matches LoRA's reward at equal KL with fewer trainable parameters; Focus-N-Fix reaches global
fine-tuning's defect reduction with at most half its change outside the region.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import time
from pathlib import Path
from typing import Any

from _grid import add_executor_arguments, run_grid, save_result

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = RESULTS / "diffusion_finetune_runs"
METHODS = ("dpok", "ppo", "rwr", "fpg")
RING_STEPS = {"dpok": 150, "ppo": 150, "rwr": 1_000, "fpg": 150}
DIGITS_STEPS = {"dpok": 30, "ppo": 30, "rwr": 300, "fpg": 30}
BETAS = (0.1, 0.25, 0.5, 1.0, 2.0)
SMALL_SIDE = 16
"""Hidden width of the small side network (2,914 trainable parameters on the ring, LoRA rank 4 has 3,216)."""
GLOBAL_STEPS = (1, 2, 3, 4, 6, 10, 30)
KL_BUDGET = 0.95
"""The KL budget of the budgeted ring runs, as a fraction of the β = 0.5 optimum's KL (a margin for the k-NN
estimate's noise under the target's 'no more than the optimum's KL')."""
BUDGET_SEEDS = (0, 1, 2)


def jobs_of(parts: list[str]) -> list[dict[str, Any]]:
    """The runs of ``parts``, in the order the parts are given."""
    jobs: list[dict[str, Any]] = []
    for part in parts:
        if part == "ring":
            jobs += [{"part": "ring", "method": m, "trainable": "full", "beta": 0.5} for m in METHODS]
            jobs += [{"part": "ring", "method": "dpok", "trainable": t, "beta": 0.5} for t in ("lora", "side")]
            jobs += [{"part": "ring", "method": "dpok", "trainable": "full", "beta": b} for b in BETAS if b != 0.5]
            # A side network smaller than LoRA, at two β, so that its reward can be read at LoRA's KL.
            jobs += [{"part": "ring", "method": "dpok", "trainable": "side", "beta": b, "side_hidden": SMALL_SIDE}
                     for b in (0.5, 1.0)]
            jobs += [{"part": "ring", "method": m, "trainable": "full", "beta": 0.5, "kl_budget": KL_BUDGET, "seed": s,
                      **({"strict": True} if strict else {})}
                     for strict in (False, True) for s in BUDGET_SEEDS for m in METHODS]
        elif part == "digits":
            jobs += [{"part": "digits", "method": m, "trainable": "full", "beta": 0.01} for m in METHODS]
            jobs += [{"part": "digits", "method": "dpok", "trainable": t, "beta": 0.01} for t in ("lora", "side")]
        else:
            jobs.append({"part": "fix", "mode": "focus", "steps": 30})
            jobs += [{"part": "fix", "mode": "global", "steps": s} for s in GLOBAL_STEPS]
    return jobs


def key_of(job: dict[str, Any]) -> str:
    if job["part"] == "fix":
        return f"fix-{job['mode']}-{job['steps']}"
    width = f"-h{job['side_hidden']}" if "side_hidden" in job else ""
    budget = f"-budget{job['kl_budget']}{'-strict' if job.get('strict') else ''}-s{job['seed']}" \
        if "kl_budget" in job else ""
    return f"{job['part']}-{job['method']}-{job['trainable']}{width}-b{job['beta']}{budget}"


def _peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def run(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    from rlcore.adapters import diffusion

    torch.set_num_threads(1)
    record: dict[str, Any] = {"key": key_of(job), **job}
    start = time.perf_counter()
    if job["part"] == "ring":
        bed = diffusion.testbeds.ring(seed=0)

        def reward(x: torch.Tensor) -> torch.Tensor:
            return x[:, 0]

        opt = diffusion.kl_optimum(bed, reward, job["beta"])
        budget = job["kl_budget"] * opt.kl if "kl_budget" in job else None
        config = diffusion.FinetuneConfig(trainable=job["trainable"], side_hidden=job.get("side_hidden", 64),
                                          learning_rate=3e-3 if job["trainable"] == "lora" else 3e-4,
                                          kl_target=budget, kl_strict=job.get("strict", False))
        steps = RING_STEPS[job["method"]]
        result = diffusion.finetune(bed.model, bed.scheduler, reward, job["method"], job["beta"], steps,
                                    job.get("seed", 0), config)
        record.update(final_beta=result.kl_weight, update_kept=result.update_kept)
        record.update(share=(result.expected_reward - opt.reference_reward) / (opt.expected_reward
                                                                               - opt.reference_reward),
                      kl_over_optimum=result.kl_to_reference / opt.kl, optimum_reward=opt.expected_reward,
                      optimum_kl=opt.kl, reference_reward=opt.reference_reward)
    elif job["part"] == "digits":
        bed = diffusion.testbeds.digits(seed=0)
        config = diffusion.FinetuneConfig(batch_size=64, eval_samples=500, trainable=job["trainable"],
                                          learning_rate=3e-3 if job["trainable"] == "lora" else 3e-4)
        steps = DIGITS_STEPS[job["method"]]
        result = diffusion.finetune(bed.model, bed.scheduler, bed.thickness, job["method"], job["beta"], steps, 0,
                                    config, bed.sample_shape, held_out_reward=bed.held_out_class_reward,
                                    conditions=torch.arange(10))
        y = bed.labels(500)
        reference = bed.sample(500, seed=1, labels=y)
        record.update(reference_reward=float(bed.thickness(reference).mean()),
                      reference_held_out=float(bed.held_out_class_reward(reference, y).mean()))
    else:
        bed = diffusion.testbeds.digits(seed=0)
        y0 = bed.config.defect_class

        def fewer_defects(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return -bed.defect_score(x, y)

        config = diffusion.FinetuneConfig(batch_size=64, eval_samples=256)
        steps = job["steps"]
        result = diffusion.finetune(bed.model, bed.scheduler, fewer_defects, "dpok", 0.01, steps, 0, config,
                                    bed.sample_shape, conditions=torch.tensor([y0]),
                                    region=bed.defect_map if job["mode"] == "focus" else None)
        y = bed.labels(512, y0)
        tuned, original = result.sample_pair(512, seed=7, condition=y)
        region = bed.defect_map(original, y) > 0.5
        change = (tuned - original).abs()
        record.update(defect_rate_before=bed.defect_rate(original, y), defect_rate=bed.defect_rate(tuned, y),
                      change_inside=float(change[region].mean()), change_outside=float(change[~region].mean()),
                      held_out_class=float(bed.held_out_class_reward(tuned, y).mean()))
        if job["mode"] == "focus" or steps == max(GLOBAL_STEPS):
            torch.save({"original": original[:32], "tuned": tuned[:32]}, RUNS / f"{key_of(job)}-samples.pt")
    seconds = time.perf_counter() - start
    record.update(expected_reward=result.expected_reward, held_out_reward=result.held_out_reward,
                  kl=result.kl_to_reference, trajectory_kl=result.trajectory_kl,
                  trainable_parameters=result.trainable_parameters, steps=steps, seconds=round(seconds, 1),
                  seconds_per_iteration=round(result.seconds / steps, 4), peak_memory_mb=round(_peak_memory_mb(), 1),
                  device="cuda" if torch.cuda.is_available() else "cpu")
    if job["part"] == "digits" and job["method"] == "dpok" and job["trainable"] == "full":
        y = bed.labels(32)
        torch.save({"original": bed.sample(32, seed=3, labels=y), "tuned": result.sample(32, seed=3, condition=y)},
                   RUNS / f"{key_of(job)}-samples.pt")
    return record


def _interpolate(points: list[tuple[float, float]], x: float) -> float | None:
    """Linear interpolation of y at x over points (x decreasing or increasing); None outside their range."""
    points = sorted(points)
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return None


def _budget_lines(all_runs: list[dict[str, Any]]) -> list[str]:
    """The budgeted ring runs, soft and strict: per method and seed, and the issue's target over every seed."""
    lines: list[str] = []
    for strict in (False, True):
        lines += _one_budget(sorted((r for r in all_runs if r.get("strict", False) == strict),
                                    key=lambda r: (r["method"], r["seed"])), strict)
    return lines


def _one_budget(runs: list[dict[str, Any]], strict: bool) -> list[str]:
    if not runs:
        return []
    budget = runs[0]["kl_budget"]
    how = ("strict (`kl_strict=True`: the update shrunk towards the pretrained weights until a 4,096-sample KL "
           "estimate is within it)" if strict else "β starts at 0.5 and adapts")
    lines = ["", f"### Under a KL budget of {budget}x the β = 0.5 optimum's KL, {how}", "",
             "| method | seed | share of the way to the optimum | output KL / optimum's | final β | update kept | "
             "s / iteration |", "|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['method']} | {r['seed']} | {r['share']:.3f} | {r['kl_over_optimum']:.2f} | "
                     f"{r['final_beta']:.3f} | {r.get('update_kept', 1.0):.3f} | {r['seconds_per_iteration']} |")
    verdicts = []
    for method in METHODS:
        mine = [r for r in runs if r["method"] == method]
        if not mine:
            continue
        ok = all(r["share"] >= 0.9 and r["kl_over_optimum"] <= 1.0 for r in mine)
        worst = min(r["share"] for r in mine)
        highest = max(r["kl_over_optimum"] for r in mine)
        verdicts.append((method, ok, f"{method} {'met' if ok else 'NOT met'} (lowest share {worst:.3f}, highest "
                                     f"KL {highest:.2f}x, {len(mine)} seeds)"))
    every = all(ok for _, ok, _ in verdicts) and len(verdicts) == len(METHODS)
    lines += ["", f"Target (every method at least 90 % of the way at no more than the optimum's KL, on every seed): "
              f"{'met' if every else 'NOT met'}: " + "; ".join(text for _, _, text in verdicts) + "."]
    return lines


def report(runs: dict[str, dict[str, Any]], machine: str) -> None:
    import torch

    import rlcore

    lines = ["# Diffusion fine-tuning: methods, trainable parts, the trade-off, Focus-N-Fix", "",
             f"Machine: {machine} ({platform.machine()}, {os.cpu_count()} cores), one torch thread per run, runs "
             f"one at a time beside other jobs. Versions: rlcore {rlcore.__version__}, torch {torch.__version__}. "
             "Command: `python benchmarks/diffusion_finetune.py`. Peak memory is the run process's peak resident "
             "set (CPU; it includes the interpreter and libraries).", ""]
    ring = [r for r in runs.values() if r["part"] == "ring" and "kl_budget" not in r]
    budgeted = [r for r in runs.values() if r["part"] == "ring" and "kl_budget" in r]
    if ring:
        lines += ["## Ring (reward x, seed 0)", "",
                  "| method | trainable | β | iterations | share of the way to the optimum | output KL / optimum's | "
                  "share of the frontier's gain at its KL | trainable parameters | s / iteration | peak MB |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        # The optima of every β trace the best reward reachable at each KL (the frontier); a run's gain over the
        # reference is compared with the frontier's gain at the run's own KL.
        frontier = sorted({(r["optimum_kl"], r["optimum_reward"]) for r in ring})
        for r in sorted(ring, key=lambda r: (r["beta"], r["trainable"], r["method"])):
            best = _interpolate(frontier, r["kl"])
            gain = r["expected_reward"] - r["reference_reward"]
            at_kl = "–" if best is None else f"{gain / (best - r['reference_reward']):.3f}"
            trainable = r["trainable"] + (f" (width {r['side_hidden']})" if "side_hidden" in r else "")
            lines.append(f"| {r['method']} | {trainable} | {r['beta']} | {r['steps']} | {r['share']:.3f} | "
                         f"{r['kl_over_optimum']:.2f} | {at_kl} | {r['trainable_parameters']:,} | "
                         f"{r['seconds_per_iteration']} | {r['peak_memory_mb']:.0f} |")
        lines += ["", "The frontier is the exact optima of the five β, linearly interpolated at a run's output KL (a "
                  "chord under a concave curve, and the k-NN KL estimate has its own error, so values a little "
                  "above 1 mean on the frontier); –: the run's KL is below the smallest optimum's."]
        met = [r for r in ring if r["trainable"] == "full" and r["beta"] == 0.5]
        if met:
            ok = [r["method"] for r in met if r["share"] >= 0.9 and r["kl_over_optimum"] <= 1.0]
            lines += ["", f"Target (β = 0.5, full model: at least 90 % of the way at no more than the optimum's KL) "
                      f"met by {', '.join(ok) or 'none'} of {', '.join(r['method'] for r in met)}."]
        parts = {r["trainable"]: r for r in ring
                 if r["method"] == "dpok" and r["beta"] == 0.5 and "side_hidden" not in r}
        if {"lora", "side"} <= set(parts):
            lora, side = parts["lora"], parts["side"]
            lines.append(f"Side network against LoRA (DPOK, β = 0.5): share {side['share']:.3f} vs {lora['share']:.3f} "
                         f"at output KL {side['kl']:.3f} vs {lora['kl']:.3f}, with {side['trainable_parameters']:,} "
                         f"vs {lora['trainable_parameters']:,} trainable parameters.")
            small = [r for r in ring if r.get("side_hidden") == SMALL_SIDE]
            at_kl = _interpolate([(r["kl"], r["expected_reward"]) for r in small], lora["kl"])
            if at_kl is not None:
                fewer = small[0]["trainable_parameters"] < lora["trainable_parameters"]
                met = fewer and at_kl >= lora["expected_reward"]
                lines.append(f"Target (the side network matches LoRA's reward at equal KL with fewer trainable "
                             f"parameters): {'met' if met else 'NOT met'}: the width-{SMALL_SIDE} side network "
                             f"({small[0]['trainable_parameters']:,} parameters; DPOK at β 0.5 and 1, interpolated) "
                             f"reaches {at_kl:.3f} at LoRA's KL {lora['kl']:.3f}, LoRA {lora['expected_reward']:.3f} "
                             f"({lora['trainable_parameters']:,} parameters).")
        lines += _budget_lines(budgeted)
        lines += ["", "![trade-off](diffusion_finetune_tradeoff.png)", ""]
    digits = [r for r in runs.values() if r["part"] == "digits"]
    if digits:
        ref = digits[0]
        lines += [f"## Digits: thicker strokes, watched by the held-out classifier (β = 0.01; reference thickness "
                  f"{ref['reference_reward']:.3f}, class probability {ref['reference_held_out']:.3f})", "",
                  "| method | trainable | iterations | thickness | held-out class probability | trajectory KL | "
                  "trainable parameters | s / iteration | peak MB |", "|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(digits, key=lambda r: (r["trainable"], r["method"])):
            lines.append(f"| {r['method']} | {r['trainable']} | {r['steps']} | {r['expected_reward']:.3f} | "
                         f"{r['held_out_reward']:.3f} | {r['trajectory_kl']:.2f} | {r['trainable_parameters']:,} | "
                         f"{r['seconds_per_iteration']} | {r['peak_memory_mb']:.0f} |")
        lines += ["", "![digits before and after](diffusion_finetune_digits.png)", ""]
    fixes = [r for r in runs.values() if r["part"] == "fix"]
    if fixes:
        lines += ["## Focus-N-Fix against global fine-tuning (the zeros' dot, DPOK, β = 0.01)", "",
                  "| run | iterations | defective zeros | change inside the region | change outside | held-out class "
                  "probability | s / iteration |", "|---|---|---|---|---|---|---|"]
        for r in sorted(fixes, key=lambda r: (r["mode"] != "focus", r["steps"])):
            lines.append(f"| {r['mode']} | {r['steps']} | {r['defect_rate_before']:.3f} → {r['defect_rate']:.3f} | "
                         f"{r['change_inside']:.3f} | {r['change_outside']:.4f} | {r['held_out_class']:.3f} | "
                         f"{r['seconds_per_iteration']} |")
        focus = next((r for r in fixes if r["mode"] == "focus"), None)
        glob = [(r["defect_rate"], r["change_outside"]) for r in fixes if r["mode"] == "global"]
        if focus is not None and glob:
            at = _interpolate(glob, focus["defect_rate"])
            if at is None:
                lines += ["", "Global fine-tuning's runs do not bracket Focus-N-Fix's defect rate: no comparison."]
            else:
                ratio = focus["change_outside"] / at
                lines += ["", f"At Focus-N-Fix's defect rate ({focus['defect_rate']:.3f}), global fine-tuning "
                          f"changes {at:.4f} outside the region (interpolated), Focus-N-Fix "
                          f"{focus['change_outside']:.4f}: {ratio:.2f}x (target at most 0.5x: "
                          f"{'met' if ratio <= 0.5 else 'NOT met'})."]
        lines += ["", "![Focus-N-Fix and global fine-tuning](diffusion_finetune_fix.png)", ""]
    (RESULTS / "diffusion_finetune.md").write_text("\n".join(lines).rstrip() + "\n")
    (RESULTS / "diffusion_finetune.json").write_text(json.dumps({"machine": machine, "runs": runs}, indent=1))


def plots(runs: dict[str, dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    fixed = {k: r for k, r in runs.items() if "kl_budget" not in r}
    budgeted = [r for r in runs.values() if "kl_budget" in r]
    sweep = sorted((r for r in fixed.values() if r["part"] == "ring" and r["method"] == "dpok"
                    and r["trainable"] == "full"), key=lambda r: r["beta"])
    if sweep:
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.plot([r["optimum_kl"] for r in sweep], [r["optimum_reward"] for r in sweep], "-o", label="exact optimum p*")
        ax.plot([r["kl"] for r in sweep], [r["expected_reward"] for r in sweep], "--s", label="DPOK")
        others = [r for r in fixed.values() if r["part"] == "ring" and r["beta"] == 0.5
                  and (r["method"] != "dpok" or r["trainable"] != "full") and "side_hidden" not in r]
        for r in others:
            ax.plot([r["kl"]], [r["expected_reward"]], "x", label=f"{r['method']} {r['trainable']} (β 0.5)")
        for method, marker in zip(METHODS, "v^<>", strict=True):
            mine = [r for r in budgeted if r["method"] == method]
            if mine:
                ax.plot([r["kl"] for r in mine], [r["expected_reward"] for r in mine], marker, mfc="none",
                        label=f"{method} under the KL budget ({len(mine)} seeds)")
        small = sorted((r for r in fixed.values() if "side_hidden" in r), key=lambda r: r["kl"])
        if small:
            ax.plot([r["kl"] for r in small], [r["expected_reward"] for r in small], ":^",
                    label=f"dpok side, width {small[0]['side_hidden']} (β 0.5, 1)")
        for r in sweep:
            ax.annotate(f"β {r['beta']}", (r["kl"], r["expected_reward"]), fontsize=7)
        ax.set_xlabel("KL to the pretrained model (output)")
        ax.set_ylabel("expected reward")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(RESULTS / "diffusion_finetune_tradeoff.png", dpi=120)
        plt.close(fig)

    def grid(ax: Any, images: torch.Tensor, title: str) -> None:
        x = ((images[:32].clamp(-1, 1) + 1) / 2).reshape(4, 8, 8, 8).permute(0, 2, 1, 3).reshape(32, 64)
        ax.imshow(x.numpy(), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(title, fontsize=8)
        ax.axis("off")

    for name, key, titles in (("digits", "digits-dpok-full-b0.01", ("pretrained", "thicker (DPOK)")),
                              ("fix", "fix-focus-30", ("pretrained zeros", "Focus-N-Fix"))):
        path = RUNS / f"{key}-samples.pt"
        if not path.is_file():
            continue
        samples = torch.load(path)
        extra = RUNS / f"fix-global-{max(GLOBAL_STEPS)}-samples.pt"
        panels = [(samples["original"], titles[0]), (samples["tuned"], titles[1])]
        if name == "fix" and extra.is_file():
            panels.append((torch.load(extra)["tuned"], f"global ({max(GLOBAL_STEPS)} iterations)"))
        fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 2.2))
        for ax, (images, title) in zip(axes, panels, strict=True):
            grid(ax, images, title)
        fig.tight_layout()
        fig.savefig(RESULTS / f"diffusion_finetune_{name}.png", dpi=120)
        plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", choices=("ring", "digits", "fix"), default=["ring", "digits", "fix"])
    parser.add_argument("--workers", type=int, default=1, help="runs at a time (one process and thread each)")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--machine", default="2-core x86_64 CPU shared with other jobs, no GPU")
    add_executor_arguments(parser)
    args = parser.parse_args()
    RUNS.mkdir(parents=True, exist_ok=True)
    jobs = [job for job in jobs_of(args.parts) if not (RUNS / f"{key_of(job)}.json").exists()]
    print(f"{len(jobs_of(args.parts))} runs, {len(jobs)} to do", flush=True)
    if not args.report_only and jobs:
        def done(record: dict[str, Any]) -> None:
            save_result(RUNS / f"{record['key']}.json", json.dumps(record, indent=1))
            print(f"{record['key']}: {record['seconds']} s", flush=True)

        run_grid(run, jobs, workers=args.workers, executor=args.executor, ray_address=args.ray_address,
                 on_result=done, fresh_process_per_job=True)
    runs = {p.stem: json.loads(p.read_text()) for p in sorted(RUNS.glob("*.json"))}
    if runs:
        report(runs, args.machine)
        plots(runs)
        print((RESULTS / "diffusion_finetune.md").read_text())


if __name__ == "__main__":
    main()
