r"""The main job on the embedded default: rank every conv filter of the digits CNN
by its Shapley value for validation accuracy, then check the ranking on the
held-out test split (remove the top 10 vs 10 random filters), and compare the
cost of the top-10 bandit with estimating every unit as well.

    python -m comparisons [--quick] [--out DIR] [--seeds N]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from captum_neuron_shapley import FilterShapley
from captum_neuron_shapley.ablation import metric_after_removal
from captum_neuron_shapley.examples import load_digits_splits, trained_digits_cnn


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m comparisons",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="fewer seeds, smaller budgets")
    p.add_argument("--out", default="comparisons_out", help="output folder")
    p.add_argument("--seeds", type=int, default=None, help="Shapley seeds (default 3)")
    p.add_argument("--top-k", type=int, default=10)
    args = p.parse_args(argv)
    n_seeds = args.seeds or (1 if args.quick else 3)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    t0 = time.perf_counter()
    data = load_digits_splits()
    model = trained_digits_cnn()
    fs = FilterShapley(model, model.conv_layers)
    k = args.top_k
    common = dict(
        target=data.y_val,
        perturbations_per_eval=8,
        bound="normal",
        show_progress=sys.stderr.isatty(),
        return_result=True,
    )
    if args.quick:
        common.update(subset_size=128, max_evaluations=1500)

    runs, top_acc = [], []
    for seed in range(n_seeds):
        t = time.perf_counter()
        res = fs.attribute(data.x_val, top_k=k, seed=seed, **common)
        wall = time.perf_counter() - t
        top = torch.argsort(res.flat_values, descending=True)[:k].tolist()
        acc = metric_after_removal(model, res, [[], top], data.x_test, data.y_test)
        top_acc.append(float(acc[1]))
        runs.append(
            {
                "seed": seed,
                "evaluations": res.n_evaluations,
                "permutations": res.n_permutations,
                "converged": res.converged,
                "wall_s": round(wall, 1),
                "top_units": res.top_units(k),
                "test_acc_intact": float(acc[0]),
                "test_acc_without_top": float(acc[1]),
            }
        )
        print(
            f"seed {seed}: {res.n_evaluations} evaluations, {res.n_permutations} "
            f"chains, converged={res.converged}, {wall:.0f}s; test accuracy "
            f"{acc[0]:.3f} -> {acc[1]:.3f} without the top {k}"
        )
    g = torch.Generator().manual_seed(1234)
    rand_sets = [
        torch.randperm(res.n_units, generator=g)[:k].tolist() for _ in range(20)
    ]
    rand_acc = metric_after_removal(model, res, rand_sets, data.x_test, data.y_test)

    # Cost of estimating every unit as well as the bandit's best-estimated unit:
    # plain truncated Monte Carlo (all units in every chain) for as many chains.
    n_chains = int(res.counts.max())
    t = time.perf_counter()
    plain = fs.attribute(
        data.x_val, top_k=None, epsilon=0.0, seed=0, max_permutations=n_chains, **common
    )
    plain_wall = time.perf_counter() - t

    summary = {
        "command": "python -m comparisons" + (" --quick" if args.quick else ""),
        "machine": platform.platform(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "test_acc_intact": runs[0]["test_acc_intact"],
        "test_acc_without_top_k": top_acc,
        "test_acc_without_random_k": {
            "median": statistics.median(rand_acc.tolist()),
            "min": float(rand_acc.min()),
            "max": float(rand_acc.max()),
            "n": 20,
        },
        "bandit_evaluations": [r["evaluations"] for r in runs],
        "plain_tmc_evaluations": plain.n_evaluations,
        "plain_tmc_chains": n_chains,
        "plain_tmc_wall_s": round(plain_wall, 1),
        "runs": runs,
        "total_wall_s": round(time.perf_counter() - t0, 1),
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    lines = [
        "# Neuron Shapley on the digits CNN (160 conv filters)",
        "",
        f"Command: `{summary['command']}`; {summary['machine']}, torch "
        f"{summary['torch']}, {summary['threads']} threads.",
        "",
        "| | test accuracy |",
        "|---|---|",
        f"| intact model | {summary['test_acc_intact']:.3f} |",
        *[
            f"| without top-{k} by Shapley (seed {r['seed']}) | "
            f"{r['test_acc_without_top']:.3f} |"
            for r in runs
        ],
        f"| without {k} random filters (median of 20; min-max) | "
        f"{summary['test_acc_without_random_k']['median']:.3f} "
        f"({rand_acc.min():.3f}-{rand_acc.max():.3f}) |",
        "",
        "| estimator | model evaluations |",
        "|---|---|",
        *[f"| top-{k} bandit (seed {r['seed']}) | {r['evaluations']} |" for r in runs],
        f"| every unit for {n_chains} chains (the bandit's most-sampled unit) | "
        f"{plain.n_evaluations} |",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {out / 'report.md'} and {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
