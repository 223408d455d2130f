r"""Is :meth:`~captum_neuron_shapley.NeuronShapley.estimate_cost` right on the
benchmark's games? For each game: the estimate from its default pilot, then a
run of ``--chains`` chains with every unit sampled (``epsilon=0``, the pilot's
setting), and the ratios of predicted to measured evaluations and seconds::

    python -m comparisons.bench.cost_check --out docs/bench/cost_check.json

One torch thread; the games of :mod:`comparisons.bench.nets`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

import torch

from .nets import bench_game

__all__ = ["cost_check"]

GAMES = ("digits-cnn/zero", "digits-resnet/zero", "digits-mlp/zero")


def cost_check(name: str, chains: int, seed: int = 0) -> Dict[str, Any]:
    r"""Predicted against measured evaluations and seconds of ``chains`` chains
    on the benchmark game ``name``."""
    bg = bench_game(name)
    kw: Dict[str, Any] = dict(target=bg.y, layer_baselines=bg.baselines, seed=seed)
    t0 = time.perf_counter()
    est = bg.attr.estimate_cost(bg.x, **kw)
    pilot_s = time.perf_counter() - t0
    res = bg.attr.attribute(
        bg.x,
        epsilon=0.0,
        max_permutations=chains,
        return_result=True,
        **{**kw, "seed": seed + 1},
    )
    predicted = est.chains(res.n_permutations)
    measured_s = res.cost.seconds - res.cost.refine_seconds
    return {
        "game": name,
        "n_units": est.n_units,
        "batch_size": est.batch_size,
        "pilot_s": pilot_s,
        "chains": res.n_permutations,
        "predicted_evaluations": predicted.evaluations,
        "measured_evaluations": res.n_evaluations,
        "ratio_evaluations": predicted.evaluations / res.n_evaluations,
        "predicted_s": predicted.seconds,
        "measured_s": measured_s,
        "ratio_seconds": predicted.seconds / measured_s,
    }


def main(argv: Sequence[str] = ()) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--chains", type=int, default=40)
    p.add_argument("--games", nargs="*", default=list(GAMES))
    p.add_argument("--out", type=Path)
    args = p.parse_args(list(argv) or None)
    torch.set_num_threads(1)
    rows: List[Dict[str, Any]] = []
    for g in args.games:
        rows.append(cost_check(g, args.chains))
        r = rows[-1]
        print(
            f"{g}: evaluations {r['predicted_evaluations']:,} predicted, "
            f"{r['measured_evaluations']:,} measured ({r['ratio_evaluations']:.2f}x); "
            f"seconds {r['predicted_s']:.1f} predicted, {r['measured_s']:.1f} "
            f"measured ({r['ratio_seconds']:.2f}x)",
            flush=True,
        )
    if args.out is not None:
        args.out.write_text(
            json.dumps(
                {
                    "command": "python -m comparisons.bench.cost_check "
                    + " ".join(argv),
                    "rows": rows,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
