r"""Speed and scale benchmarks (``python -m comparisons.bench``).

Three measurements, each side by side in one process, written as a markdown table
and JSON (with the machine, versions and command) to ``--out``:

1. *Evaluations to the top-k.* On the embedded digits CNN (160 conv filters), the
   model evaluations each estimator needs until its estimated top-10 reaches
   epsilon-precision >= 0.9 against a reference ranking (a long plain truncated
   Monte-Carlo run, cached on disk). A unit counts as correct when its reference
   value is at least the reference 10th value minus epsilon. Estimators: ours (top-k
   bandit, normal bounds), plain truncated Monte Carlo (every unit in every chain),
   the original paper's settings (bound="paper"), and Captum's
   ``ShapleyValueSampling`` through a mask wrapper over the same game (run with
   doubling ``n_samples`` until the precision is reached). Medians over seeds.
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
from typing import Callable, Dict, List

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
        perturbations_per_eval=8,
        show_progress=sys.stderr.isatty(),
        return_result=True,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(res.flat_values, path)
    return res.flat_values


def evals_to_precision(fs, data, reference, seed, **kw) -> Dict[str, float]:
    r"""Run one of our estimators until precision >= 0.9; its evaluation count."""
    hit: Dict[str, float] = {}

    def cb(est) -> bool:
        if est.n_permutations >= 2 and precision(est.stats.mean, reference) >= 0.9:
            hit["evaluations"] = est.n_evaluations
            return True
        return False

    t = time.perf_counter()
    res = fs.attribute(
        data.x_val,
        target=data.y_val,
        seed=seed,
        callback=cb,
        perturbations_per_eval=8,
        return_result=True,
        **kw,
    )
    reached = "evaluations" in hit or precision(res.flat_values, reference) >= 0.9
    return {  # not reached: the evaluations the run spent, flagged
        "evaluations": hit.get("evaluations", res.n_evaluations),
        "reached": reached,
        "final_evaluations": res.n_evaluations,
        "wall_s": time.perf_counter() - t,
    }


def svs_to_precision(fs, data, reference, seed, max_samples=256) -> Dict[str, float]:
    game = fs.game(data.x_val, target=data.y_val, perturbations_per_eval=8)
    svs = ShapleyValueSampling(lambda m: game.value(m > 0.5).float())
    n, t = 1, time.perf_counter()
    while n <= max_samples:
        before = game.n_evaluations
        with torch.random.fork_rng(devices=[]):  # Captum samples with the global RNG
            torch.manual_seed(seed)
            phi = svs.attribute(
                torch.ones(1, game.n_units),
                baselines=0.0,
                n_samples=n,
                perturbations_per_eval=8,
            )[0]
        if precision(phi.double(), reference) >= 0.9:
            return {
                "evaluations": game.n_evaluations - before,
                "reached": True,
                "n_samples": n,
                "wall_s": time.perf_counter() - t,
            }
        n *= 2
    return {
        "evaluations": float("nan"),
        "reached": False,
        "n_samples": n,
        "wall_s": time.perf_counter() - t,
    }


def throughput(model, layers, x, y, blocks=5, per_block=24) -> Dict[str, float]:
    game = FilterShapley(model, layers).game(x, target=y, perturbations_per_eval=8)
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
        ref = reference_values(fs, data, args.reference_chains)
        runs: Dict[str, Callable] = {
            "top-10 bandit (ours)": lambda s: evals_to_precision(
                fs, data, ref, s, top_k=K, bound="normal"
            ),
            "plain truncated MC": lambda s: evals_to_precision(
                fs, data, ref, s, epsilon=0.0
            ),
            "paper settings": lambda s: evals_to_precision(
                fs, data, ref, s, top_k=K, bound="paper"
            ),
            "Captum ShapleyValueSampling": lambda s: svs_to_precision(fs, data, ref, s),
        }
        table = {}
        for name, fn in runs.items():
            rs = [fn(100 + s) for s in range(args.seeds)]
            ev = [r["evaluations"] for r in rs]
            table[name] = {"runs": rs, "median_evaluations": statistics.median(ev)}
            print(name, ev, flush=True)
        ours = table["top-10 bandit (ours)"]["median_evaluations"]
        report["evaluations_to_top10"] = table
        lines += [
            f"## Evaluations until the top-{K} reaches epsilon-precision 0.9",
            "",
            f"epsilon = {EPS}; reference: plain truncated MC, "
            f"{args.reference_chains} chains; {args.seeds} seeds.",
            "",
            "| estimator | median evaluations | per seed | ratio to ours |",
            "|---|---|---|---|",
        ]
        for name, row in table.items():
            med = row["median_evaluations"]
            per_seed = ", ".join(
                f"{r['evaluations']:.0f}" + ("" if r["reached"] else " (not reached)")
                for r in row["runs"]
            )
            lines.append(f"| {name} | {med:.0f} | {per_seed} | {med / ours:.1f}x |")
        lines.append("")

    if "throughput" not in args.skip:
        convs = model.conv_layers
        tp = {
            "all conv layers": throughput(model, convs, data.x_val, data.y_val),
            "last conv layer only": throughput(
                model, convs[-1:], data.x_val, data.y_val
            ),
        }
        report["throughput"] = tp
        lines += [
            "## Throughput (digits CNN, 397 examples per evaluation)",
            "",
            "| ablated | units | coalition evals/s | plain forwards/s | ratio |",
            "|---|---|---|---|---|",
        ]
        for name, r in tp.items():
            lines.append(
                f"| {name} | {r['n_units']} | {r['evals_per_s']:.1f} | "
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
