r"""Speed and scale benchmarks (``python -m comparisons.bench``).

Three measurements, each side by side in one process, written as a markdown table
and JSON (with the machine, versions and command) to ``--out``:

1. *Evaluations to the top-k.* On the embedded digits CNN (160 conv filters), the
   model evaluations each estimator needs until its estimated top-10 first reaches,
   and until it stays at, epsilon-precision 0.9 (and 1.0) against a reference
   ranking (a long plain truncated Monte-Carlo run, cached on disk). A unit counts
   as correct when its reference value is at least the reference 10th value minus
   epsilon. Estimators: ours (defaults: top-k bandit, normal bounds, stratified
   cycles of 4 chains), the same chains with the bandit off, plain truncated Monte
   Carlo (independent chains, every unit in every chain), the original paper's
   settings (bound="paper", independent chains), and Captum's
   ``ShapleyValueSampling`` through a mask wrapper over the same game (its running
   mean over permutations). Medians over seeds; a precision-against-evaluations
   figure.
2. *Throughput.* Coalition evaluations per second against plain forward passes per
   second of the unmodified model on the same examples, interleaved in blocks, with
   all conv layers ablated and with only the last layer(s) ablated.
3. *Scale.* ResNet-18 (4,800 filters) and Inception-v3 (17,216 filters) with random
   weights: evaluations per second and peak memory, on the GPU when available.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import captum
import torch
from captum.attr import ShapleyValueSampling

from captum_neuron_shapley import FilterShapley
from captum_neuron_shapley.examples import (
    _cache_dir,
    load_digits_splits,
    trained_digits_cnn,
)

EPS = 0.005  # tolerance of the epsilon-precision (accuracy units)
K = 10
LEVELS = (0.9, 1.0)  # precisions reported


def precision(values: torch.Tensor, reference: torch.Tensor, k: int = K) -> float:
    r"""Fraction of the estimated top-k whose reference value is within ``EPS`` of
    the reference k-th value or above it."""
    kth = torch.topk(reference, k).values[-1]
    top = torch.topk(values, k).indices
    return float((reference[top] >= kth - EPS).double().mean())


def reference_values(fs, data, chains: int) -> torch.Tensor:
    path = _cache_dir(None) / f"bench_reference_{chains}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    res = fs.attribute(
        data.x_val,
        target=data.y_val,
        epsilon=0.0,
        seed=12345,
        max_permutations=chains,
        strata=1,  # plain independent chains, as the cached files were made
        perturbations_per_eval=8,
        show_progress=sys.stderr.isatty(),
        return_result=True,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(res.flat_values, path)
    return res.flat_values


def our_trajectory(fs, data, reference, seed, budget, **kw) -> Dict[str, object]:
    r"""Run one of our estimators (at most ``budget`` evaluations) and record the
    precision of its running estimate after every round (one chain, or a cycle of
    ``strata`` chains: recording less often can only delay our first and stays
    points)."""
    traj: List[Tuple[int, float]] = []

    def cb(est) -> None:
        traj.append((est.n_evaluations, precision(est.stats.mean, reference)))

    t = time.perf_counter()
    res = fs.attribute(
        data.x_val,
        target=data.y_val,
        seed=seed,
        callback=cb,
        max_evaluations=budget,
        perturbations_per_eval=8,
        return_result=True,
        **kw,
    )
    return {
        "trajectory": traj,
        "converged": bool(res.converged),
        "wall_s": time.perf_counter() - t,
    }


def svs_trajectory(fs, data, reference, seed, budget) -> Dict[str, object]:
    r"""Captum ``ShapleyValueSampling`` over the same game through a mask wrapper.
    Its estimate with ``n_samples = m`` is the mean of ``m`` independent
    permutations, so it is run one permutation at a time (each seeded from
    ``seed``) and the running mean is recorded after every permutation."""
    game = fs.game(data.x_val, target=data.y_val, perturbations_per_eval=8)
    svs = ShapleyValueSampling(lambda m: game.value(m > 0.5).float())
    total = torch.zeros(game.n_units, dtype=torch.float64)
    traj: List[Tuple[int, float]] = []
    start, t, m = game.n_evaluations, time.perf_counter(), 0
    while game.n_evaluations - start < budget:
        with torch.random.fork_rng(devices=[]):  # Captum samples with the global RNG
            torch.manual_seed(seed * 1_000_003 + m)
            total += svs.attribute(
                torch.ones(1, game.n_units),
                baselines=0.0,
                n_samples=1,
                perturbations_per_eval=8,
            )[0].double()
        m += 1
        traj.append((game.n_evaluations - start, precision(total / m, reference)))
    return {"trajectory": traj, "converged": False, "wall_s": time.perf_counter() - t}


def first_reached(traj: Sequence[Tuple[int, float]], level: float) -> Optional[int]:
    r"""Evaluations at the first estimate with precision >= ``level``."""
    return next((int(e) for e, p in traj if p >= level), None)


def stays_reached(traj: Sequence[Tuple[int, float]], level: float) -> Optional[int]:
    r"""Evaluations after which every later estimate (to the end of the run) has
    precision >= ``level``; None when the last one is below it."""
    if not traj or traj[-1][1] < level:
        return None
    i = len(traj) - 1
    while i > 0 and traj[i - 1][1] >= level:
        i -= 1
    return int(traj[i][0])


def topk_benchmark(fs, data, args, out: Path, lines: List[str]) -> Dict[str, object]:
    r"""Every estimator on the same game and seeds; evaluations until the top-10
    first reaches, and until it stays at, each precision in ``LEVELS``."""
    ref = reference_values(fs, data, args.reference_chains)
    budget = args.budget
    runs: Dict[str, Callable] = {
        "top-10 bandit (ours)": lambda s: our_trajectory(
            fs, data, ref, s, budget, top_k=K, bound="fixed"
        ),
        "stratified truncated MC (bandit off)": lambda s: our_trajectory(
            fs, data, ref, s, budget, epsilon=0.0
        ),
        "plain truncated MC": lambda s: our_trajectory(
            fs, data, ref, s, budget, epsilon=0.0, strata=1
        ),
        "paper settings": lambda s: our_trajectory(
            fs, data, ref, s, budget, top_k=K, bound="paper"
        ),
        "Captum ShapleyValueSampling": lambda s: svs_trajectory(
            fs, data, ref, s, budget
        ),
    }
    table: Dict[str, Dict[str, object]] = {}
    for name, fn in runs.items():
        rs = [fn(100 + s) for s in range(args.seeds)]
        row: Dict[str, object] = {"runs": rs}
        for level in LEVELS:
            for how, f in (("first", first_reached), ("stays", stays_reached)):
                ev = [f(r["trajectory"], level) for r in rs]
                row[f"{how}_{level}"] = ev
                row[f"median_{how}_{level}"] = _median(ev)
        table[name] = row
        print(name, {k: v for k, v in row.items() if k != "runs"}, flush=True)
    kth = float(torch.topk(ref, K).values[-1])
    close = int((ref >= kth - EPS).sum())
    lines += [
        f"## Evaluations until the top-{K} reaches epsilon-precision",
        "",
        f"epsilon = {EPS}; reference: plain truncated MC, {args.reference_chains} "
        f"chains (10th value {kth:.4f}; {close} units count as correct); "
        f"{args.seeds} seeds; every run may spend {budget} evaluations. *first*: the "
        "first running estimate at that precision; *stays*: the estimate is at that "
        "precision from then on to the end of the run (the bandit's estimate is final "
        "once it stops). Medians over seeds (a seed that never got there counts as "
        "infinite); ratio: the estimator's median over ours.",
        "",
    ]
    ours = table["top-10 bandit (ours)"]
    header = "| estimator |"
    rule = "|---|"
    for level in LEVELS:
        for how in ("first", "stays"):
            header += f" {how} {level} | ratio |"
            rule += "---|---|"
    lines += [header, rule]
    for name, row in table.items():
        cells = f"| {name} |"
        for level in LEVELS:
            for how in ("first", "stays"):
                med, base = row[f"median_{how}_{level}"], ours[f"median_{how}_{level}"]
                cells += f" {_fmt(med)} | {_ratio(med, base)} |"
        lines.append(cells)
    lines += ["", "Per seed (stays 0.9):", ""]
    for name, row in table.items():
        lines.append(f"- {name}: " + ", ".join(_fmt(v) for v in row["stays_0.9"]))
    fig = plot_precision(table, budget, out / "precision.png")
    lines += ["", f"![precision against evaluations]({fig.name})", ""]
    return table


def _median(values: Sequence[Optional[int]]) -> float:
    return statistics.median(float("inf") if v is None else v for v in values)


def _fmt(v: Optional[float]) -> str:
    return "not reached" if v is None or v == float("inf") else f"{v:.0f}"


def _ratio(value: float, base: float) -> str:
    if value == float("inf") or base == float("inf"):
        return "-"
    return f"{value / base:.1f}x"


def plot_precision(table: Dict[str, Dict[str, object]], budget: int, path: Path):
    r"""Mean (over seeds) precision of each estimator's running top-10 against the
    evaluations spent; a run that stopped keeps its final estimate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = torch.linspace(0, budget, 201)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, row in table.items():
        curves = []
        for r in row["runs"]:
            ev = torch.tensor([e for e, _ in r["trajectory"]], dtype=torch.float64)
            pr = torch.tensor([p for _, p in r["trajectory"]], dtype=torch.float64)
            i = torch.searchsorted(ev, grid.double(), right=True) - 1
            curves.append(torch.where(i >= 0, pr[i.clamp_min(0)], float("nan")))
        ax.plot(grid, torch.stack(curves).nanmean(0), label=name, lw=1.5)
    ax.axhline(0.9, color="k", ls=":", lw=1)
    ax.set_xlabel("model evaluations")
    ax.set_ylabel(f"top-{K} epsilon-precision (mean over seeds)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def throughput(
    model, layers, x, y, ppe: int, blocks: int = 9, per_block: int = 24
) -> Dict[str, float]:
    game = FilterShapley(model, layers).game(x, target=y, perturbations_per_eval=ppe)
    g = torch.Generator().manual_seed(0)
    keep = torch.rand(per_block, game.n_units, generator=g) > 0.5
    ratios = []
    with torch.no_grad():
        model(x)
        game.value(keep[:8])  # warm up both paths
        for _ in range(blocks):
            t = time.perf_counter()
            for _ in range(per_block):
                model(x)
            plain = per_block / (time.perf_counter() - t)
            t = time.perf_counter()
            game.value(keep)
            ours = per_block / (time.perf_counter() - t)
            ratios.append((ours / plain, ours, plain))
    ratios.sort()
    r, ours, plain = ratios[len(ratios) // 2]
    return {
        "ratio": r,
        "evals_per_s": ours,
        "forwards_per_s": plain,
        "n_units": game.n_units,
    }


def _scale_child(name: str, device: str, batch: int, size: int) -> None:
    from torch import nn
    from torchvision import models

    torch.manual_seed(0)
    if name == "resnet18":
        model, skip = models.resnet18(weights=None), ()
    else:
        model = models.inception_v3(weights=None, aux_logits=True, init_weights=False)
        skip = ("AuxLogits",)
    model = model.to(device).eval()
    convs = [
        m
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and not n.startswith(skip)
    ]
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    fs = FilterShapley(model, convs)
    t = time.perf_counter()
    res = fs.attribute(
        x,
        target=y,
        truncation=None,
        max_evaluations=24,
        perturbations_per_eval=4,
        seed=0,
        return_result=True,
    )
    wall = time.perf_counter() - t
    if device == "cuda":
        torch.cuda.synchronize()
    t2 = time.perf_counter()
    with torch.no_grad():
        for _ in range(6):
            model(x)
    if device == "cuda":
        torch.cuda.synchronize()
    fwd = 6 / (time.perf_counter() - t2)
    out = {
        "model": name,
        "device": device,
        "n_units": res.n_units,
        "batch": batch,
        "image_size": size,
        "evaluations": res.n_evaluations,
        "wall_s_incl_setup": wall,
        "evals_per_s_incl_setup": res.n_evaluations / wall,
        "plain_forwards_per_s": fwd,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
    if device == "cuda":
        out["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
        out["gpu"] = torch.cuda.get_device_name()
    print(json.dumps(out))


def scale(device: str, batch: int) -> List[Dict[str, float]]:
    rows = []
    for name, size in (("resnet18", 112), ("inception_v3", 299)):
        cmd = [
            sys.executable,
            "-m",
            "comparisons.bench",
            "--scale-child",
            name,
            "--device",
            device,
            "--batch",
            str(batch),
            "--size",
            str(size),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m comparisons.bench")
    p.add_argument("--out", default="comparisons_out/bench")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--reference-chains", type=int, default=400)
    p.add_argument("--budget", type=int, default=8000, help="evaluations per top-k run")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument(
        "--skip", nargs="*", default=[], choices=["topk", "throughput", "scale"]
    )
    p.add_argument("--scale-child", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=112, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.scale_child:
        _scale_child(args.scale_child, args.device, args.batch, args.size)
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data, model = load_digits_splits(), trained_digits_cnn()
    fs = FilterShapley(model, model.conv_layers)
    report: Dict[str, object] = {
        "command": "python -m comparisons.bench " + " ".join(argv or sys.argv[1:]),
        "machine": platform.platform(),
        "processor": platform.processor(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "captum": captum.__version__,
    }
    lines = [
        "# Benchmarks",
        "",
        f"`{report['command']}` on {report['machine']}, "
        f"{report['threads']} threads, torch {report['torch']}.",
        "",
    ]

    if "topk" not in args.skip:
        report["evaluations_to_top10"] = topk_benchmark(fs, data, args, out, lines)

    if "throughput" not in args.skip:
        convs = model.conv_layers
        tp = {
            (name, ppe): throughput(model, ls, data.x_val, data.y_val, ppe)
            for name, ls in (
                ("all conv layers", convs),
                ("last conv layer", convs[-1:]),
            )
            for ppe in (1, 8)
        }
        report["throughput"] = [
            {"ablated": name, "perturbations_per_eval": ppe, **r}
            for (name, ppe), r in tp.items()
        ]
        lines += [
            "## Throughput (digits CNN, 397 examples per evaluation)",
            "",
            "Median over 9 interleaved blocks of 24 evaluations and 24 plain "
            "forwards (random coalitions, half the units removed).",
            "",
            "| ablated | units | perturbations_per_eval | coalition evals/s "
            "| plain forwards/s | ratio |",
            "|---|---|---|---|---|---|",
        ]
        for (name, ppe), r in tp.items():
            lines.append(
                f"| {name} | {r['n_units']} | {ppe} | {r['evals_per_s']:.1f} | "
                f"{r['forwards_per_s']:.1f} | {r['ratio']:.2f}x |"
            )
        lines.append("")

    if "scale" not in args.skip:
        rows = scale(args.device, args.batch)
        report["scale"] = rows
        lines += [
            "## Scale (random weights)",
            "",
            "| model | units | device | batch | image | evals/s (incl. setup) "
            "| plain forwards/s | peak RSS GiB |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            lines.append(
                f"| {r['model']} | {r['n_units']} | {r['device']} | "
                f"{r['batch']} | {r['image_size']} | "
                f"{r['evals_per_s_incl_setup']:.2f} | "
                f"{r['plain_forwards_per_s']:.2f} | {r['peak_rss_gib']:.2f} |"
            )
        lines.append("")

    (out / "bench.json").write_text(json.dumps(report, indent=2, default=float))
    (out / "bench.md").write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {out / 'bench.md'} and {out / 'bench.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
