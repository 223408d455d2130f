r"""How often the ``"normal"`` bound's intervals miss the exact Shapley values
(``python -m comparisons.coverage``, about 3 minutes on 2 cores).

On the test suite's small CNN (7 filters over 2 layers, exact values by
enumeration, no truncation), runs many seeds at a fixed number of chains and
counts the runs in which at least one unit's interval misses its exact value (the
family-wise miss rate; the bound's nominal rate is ``delta`` = 0.05).
"""

from __future__ import annotations

import argparse

import torch

from captum_neuron_shapley import FilterShapley
from captum_neuron_shapley.metrics import NegativeCrossEntropy
from tests.conftest import _blobs, exact_shapley, train_tiny

SETTINGS = (
    ("cycles of 4, default min_samples (5 cycles = 20 chains)", dict(), 20),
    ("independent chains (20 chains)", dict(strata=1), 20),
    ("cycles of 4, 20 cycles (80 chains)", dict(min_samples=20), 80),
)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m comparisons.coverage")
    p.add_argument("--seeds", type=int, default=150)
    args = p.parse_args(argv)
    gen = torch.Generator().manual_seed(0)
    x, y = _blobs(200, gen)
    model = train_tiny(x, y)
    fs = FilterShapley(model, [model.conv1, model.conv2])
    print("| metric | chains | family-wise miss rate (nominal 0.05) | unit misses |")
    print("|---|---|---|---|")
    for name, metric in (("accuracy", None), ("cross-entropy", NegativeCrossEntropy())):
        kw = {} if metric is None else dict(metric=metric)
        exact = exact_shapley(fs.game(x, target=y, **kw))
        for label, extra, chains in SETTINGS:
            runs = units = 0
            for seed in range(args.seeds):
                res = fs.attribute(
                    x,
                    target=y,
                    truncation=None,
                    epsilon=0.0,
                    max_permutations=chains,
                    perturbations_per_eval=16,
                    seed=seed,
                    return_result=True,
                    **kw,
                    **extra,
                )
                miss = (res.flat_values - exact).abs() > res.flat_radius
                runs += int(miss.any())
                units += int(miss.sum())
            n = args.seeds
            print(
                f"| {name} | {label} | {runs / n:.3f} | {units}/{n * len(exact)} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
