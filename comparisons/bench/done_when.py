r"""The default call against the wall time of plain forward passes, read from a
cost-axis run's ``bench.json`` (``python -m comparisons bench ...``)::

    python -m comparisons.bench.done_when docs/bench/bench.json \
        > docs/bench/done_when_resnet.json

For each seed of the ``default`` row at ``k`` (default 10): the wall time at which
its running top-k first reaches precision 0.9, the time from which it stays
there, and its precision once as much wall time has passed as 200 plain
forward passes on all examples took in the same process (timed just before the
run), each also in units of one such forward pass; then the medians over seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence

__all__ = ["done_when"]

LEVEL = 0.9


def _first(points: Sequence[Sequence[float]], level: float) -> float:
    for p in points:
        if p[4] >= level:
            return float(p[3])
    return float("inf")


def _stays(points: Sequence[Sequence[float]], level: float) -> float:
    t = float("inf")
    for p in reversed(points):
        if p[4] < level:
            break
        t = float(p[3])
    return t


def _at(points: Sequence[Sequence[float]], wall_s: float) -> float:
    prec = 0.0
    for p in points:
        if p[3] > wall_s:
            break
        prec = float(p[4])
    return prec


def done_when(
    bench: Dict[str, Any], k: int = 10, row: str = "default"
) -> Dict[str, Any]:
    r"""The figures above, from a parsed ``bench.json``."""
    cell = bench["cost_to_topk"]["cells"][0]
    r = cell["rows"][row]
    runs = [x for x in r["runs"] if x["k"] == k]
    trajectories: List[List[List[float]]] = r["trajectories"][str(k)]
    out: Dict[str, Any] = {
        "game": cell["game"],
        "row": row,
        "k": k,
        "level": LEVEL,
        "source": bench.get("command"),
        "seeds": [x["seed"] for x in runs],
        "batch_size": [x["batch_size"] for x in runs],
        "forward_200_wall_s": [],
        "first_wall_s": [],
        "first_in_forwards": [],
        "stays_wall_s": [],
        "stays_in_forwards": [],
        "precision_at_200_forwards": [],
    }
    for run, pts in zip(runs, trajectories):
        f200 = float(run["forward_wall_s"]) * 200 / float(run["forwards"])
        first, stays = _first(pts, LEVEL), _stays(pts, LEVEL)
        out["forward_200_wall_s"].append(f200)
        out["first_wall_s"].append(first)
        out["first_in_forwards"].append(first / f200 * 200)
        out["stays_wall_s"].append(stays)
        out["stays_in_forwards"].append(stays / f200 * 200)
        out["precision_at_200_forwards"].append(_at(pts, f200))
    for key in ("forward_200_wall_s", "first_in_forwards", "stays_in_forwards"):
        out["median_" + key] = statistics.median(out[key])
    out["median_precision_at_200_forwards"] = statistics.median(
        out["precision_at_200_forwards"]
    )
    out["ratio_first_to_200_forwards"] = out["median_first_in_forwards"] / 200
    out["ratio_stays_to_200_forwards"] = out["median_stays_in_forwards"] / 200
    return out


def main(argv: Sequence[str] = ()) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bench_json", type=Path)
    p.add_argument("--k", type=int, default=10)
    args = p.parse_args(list(argv) or None)
    res = done_when(json.loads(args.bench_json.read_text()), args.k)
    json.dump(res, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
