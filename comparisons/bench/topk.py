r"""Cost to the top-k (:func:`topk_benchmark`): every (cell, row, seed) run
spread over worker processes of one thread, each timing plain forward passes on
all examples first and then recording its running top-k's precision with the
evaluations, examples and seconds spent (:mod:`~comparisons.bench.precision`);
then, per cell and row, the medians over seeds of the cost until the precision
is first reached and until it stays, and of the precision at given costs, on
every cost axis (:func:`summarise_cell`), the targets table (:func:`targets`)
and the winners (:func:`wins`). Every finished run is kept in
``partial_runs.json`` as it comes, so that a run cut short leaves what it
measured (:func:`from_partial` reads it back).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from .cells import (
    CELLS,
    COST,
    game_epsilon,
    load_cell_game,
    QUICK_CELLS,
    resolve_batch,
    target_key,
    target_values,
)
from .precision import at_cost, first_reached, K, LEVELS, Recorder, stays_reached
from .rows import BASE_ROWS, estimator_rows, forward_time, FORWARDS, K10_ONLY
from .summary import CellResult, CellWin, RowResult, TargetRow, TopkResults, Wins

__all__ = [
    "TopkOptions",
    "topk_benchmark",
    "summarise_cell",
    "targets",
    "wins",
    "from_partial",
    "fmt",
    "derive",
    "SUMMARY_AXES",
    "COST_POINTS",
    "AXIS_NAMES",
]

#: One run: ``(game, row, seed, ks, budget in examples, eps, reference key)``.
Task = Tuple[str, str, int, Tuple[int, ...], int, float, str]

#: The cost axes of the summaries (:func:`derive`): coalitions evaluated,
#: examples in full-set evaluations, CPU and wall seconds, and CPU and wall
#: seconds in units of one plain forward pass on all examples timed in the
#: run's own process.
SUMMARY_AXES = ("evaluations", "full_set", "cpu_s", "wall_s", "fwd_cpu", "fwd_wall")
#: What each axis counts (for the tables).
AXIS_NAMES = {
    "evaluations": "coalitions evaluated",
    "full_set": "examples, in full-set evaluations",
    "cpu_s": "CPU seconds",
    "wall_s": "wall seconds",
    "fwd_cpu": "CPU time, in full-set forward passes",
    "fwd_wall": "wall time, in full-set forward passes",
}
#: The costs at which the precision is reported, per axis.
COST_POINTS: Dict[str, Tuple[int, ...]] = {
    "full_set": (200, 650),
    "fwd_cpu": (200, 650),
    "fwd_wall": (200,),
}


@dataclass
class TopkOptions:
    r"""Settings of the top-k part.

    Attributes:
        out (Path): Output folder (``partial_runs.json``).
        seeds (int): Seeds per row (100, 101, ...).
        jobs (int): Worker processes (one thread each; 1: in this process).
        games (list of str, optional): Only these cells.
        rows (list of str, optional): Only these rows (and the base rows).
        quick (bool): The seconds-long cell on the tests' CNN instead.
    """

    out: Path
    seeds: int = 5
    jobs: int = 2
    games: Optional[List[str]] = None
    rows: Optional[List[str]] = None
    quick: bool = False
    log: Any = field(default=lambda msg: print(msg, flush=True), repr=False)


def fmt(v: Optional[float], budget: Optional[float] = None, digits: int = 0) -> str:
    r"""A cost, or ``"> budget"`` / ``"not reached"``."""
    if v is None or v == float("inf"):
        if budget is None:
            return "not reached"
        return f"> {budget:.{digits}f}"
    return f"{v:.{digits}f}"


def _median(values: Sequence[Optional[float]]) -> float:
    return statistics.median(float("inf") if v is None else v for v in values)


def _run_task(task: Task):
    r"""One row of one cell for one seed, in a worker process: the trajectories of
    its running estimate at each k and the runs' info (with the time of
    :data:`~comparisons.bench.rows.FORWARDS` plain forward passes on all
    examples, measured just before each run)."""
    game, name, seed, ks, budget, eps, key = task
    torch.set_num_threads(1)
    bg, _ = load_cell_game(game)
    target = target_values(game, key)
    row = estimator_rows()[name]
    trajs: Dict[int, List[Any]] = {}
    infos = []
    for run_ks in [(k,) for k in ks] if row["per_k"] else [ks]:
        fwd_cpu, fwd_wall = forward_time(bg)
        rec = Recorder(target, run_ks, eps)
        rec.start()
        k = run_ks[0] if row["per_k"] else None
        info = row["run"](bg, rec, seed, budget, k, eps)
        for kk in run_ks:
            trajs[kk] = rec.trajectory(kk)
        info.update(
            seed=seed,
            forward_cpu_s=fwd_cpu,
            forward_wall_s=fwd_wall,
            forwards=FORWARDS,
        )
        if k is not None:
            info["k"] = k
        infos.append(info)
    return task, trajs, infos


def _plan(opts: TopkOptions, seeds: List[int]):
    r"""The cells to run and every (weight, task), longest first. Every
    reference a row needs is computed (and cached) here, before the workers
    start."""
    all_rows = estimator_rows()
    cells = QUICK_CELLS if opts.quick else CELLS
    if opts.games:
        cells = [c for c in cells if c[0] in opts.games]
    plan, tasks = [], []
    for game, ks, budget, which in cells:
        bg, ref = load_cell_game(game)
        eps = game_epsilon(ref)
        names = list(which) or list(all_rows)
        if opts.rows:
            names = [n for n in names if n in opts.rows or n in BASE_ROWS]
        keys = {}
        for name in names:
            row = all_rows[name]
            keys[name] = target_key(row["target"], resolve_batch(bg, row["batch"]))
            target_values(game, keys[name])
        n_examples = len(bg.x)
        plan.append((game, ks, budget, eps, names, keys, n_examples))
        cost = COST.get(game.split("/")[0], 1e-4) * budget
        for name in names:
            row_ks = (K,) if name in K10_ONLY and K in ks else ks
            weight = cost * (len(row_ks) if all_rows[name]["per_k"] else 1)
            weight *= 1 if all_rows[name]["batch"] is None else 2.5
            for seed in seeds:
                task = (game, name, seed, row_ks, budget * n_examples, eps, keys[name])
                tasks.append((weight, task))
    tasks.sort(key=lambda t: -t[0])
    return plan, [t for _, t in tasks]


class _Collector:
    r"""Gathers the finished runs, logs each and keeps them on disk."""

    def __init__(self, path: Path, log: Any) -> None:
        self.done: Dict[Tuple[str, str], Dict[str, Any]] = {}
        self.path, self.log = path, log
        self.t0 = time.perf_counter()

    def __call__(self, result) -> None:
        (game, name, seed, ks, budget, eps, key), trajs, infos = result
        row = self.done.setdefault((game, name), {"trajectories": {}, "runs": []})
        for k, traj in trajs.items():
            row["trajectories"].setdefault(str(k), {})[seed] = traj
        row["runs"] += infos
        wall = sum(i["wall_s"] for i in infos)
        reached = ", ".join(
            f"k={k}: stays 0.9 at {fmt(stays_reached(t, 0.9, 'examples'), budget)}"
            " examples"
            for k, t in trajs.items()
        )
        self.log(
            f"[{time.perf_counter() - self.t0:6.0f}s] {game} | {name} | seed {seed} | "
            f"{reached} | {wall:.0f}s"
        )
        # every finished run is kept on disk as it comes (a run cut short leaves
        # what it measured)
        self.path.write_text(
            json.dumps([[list(k), v] for k, v in self.done.items()], default=float)
        )


def topk_benchmark(opts: TopkOptions) -> TopkResults:
    r"""Every cell of :data:`~comparisons.bench.cells.CELLS` (its
    ``QUICK_CELLS`` with ``quick``), the (cell, row, seed) runs spread over
    ``opts.jobs`` processes.

    Returns:
        TopkResults: The cells, their targets and winners.
    """
    import multiprocessing as mp

    seeds = [100 + s for s in range(opts.seeds)]
    plan, tasks = _plan(opts, seeds)
    collect = _Collector(Path(opts.out) / "partial_runs.json", opts.log)
    if opts.jobs <= 1:
        for task in tasks:
            collect(_run_task(task))
    else:
        ctx = mp.get_context("spawn")
        with ctx.Pool(opts.jobs, initializer=torch.set_num_threads, initargs=(1,)) as p:
            for result in p.imap_unordered(_run_task, tasks):
                collect(result)
    cells = [
        summarise_cell(game, ks, budget, eps, names, keys, n, collect.done, seeds)
        for game, ks, budget, eps, names, keys, n in plan
    ]
    results = TopkResults(seeds, time.perf_counter() - collect.t0, cells)
    results.wins, results.targets = wins(cells), targets(cells)
    return results


def derive(
    traj: Sequence[Sequence[float]], n_examples: int, info: Dict[str, Any]
) -> List[Tuple[float, ...]]:
    r"""A trajectory on the :data:`SUMMARY_AXES` (then the precision): the
    examples in full-set evaluations, and the seconds also in units of one
    plain forward pass on all examples, as timed before the run in its
    process."""
    f_cpu = info["forward_cpu_s"] / info["forwards"]
    f_wall = info["forward_wall_s"] / info["forwards"]
    return [
        (e, x / n_examples, c, w, c / f_cpu, w / f_wall, p) for e, x, c, w, p in traj
    ]


def _reference(
    ref: Dict[str, torch.Tensor], keys: Sequence[str], ks: Sequence[int], eps: float
):
    return {
        key: {
            str(k): {
                "kth": float(torch.topk(ref[key], k).values[-1]),
                "acceptable": int(
                    (ref[key] >= torch.topk(ref[key], k).values[-1] - eps).sum()
                ),
            }
            for k in ks
        }
        for key in keys
    }


def _seed_keys(traj: Sequence[Tuple[float, ...]]) -> Dict[str, Optional[float]]:
    r"""Every summary key of one seed's derived trajectory."""
    out: Dict[str, Optional[float]] = {}
    for lv in LEVELS:
        for a, axis in enumerate(SUMMARY_AXES):
            out[f"first{lv}@{axis}"] = first_reached(traj, lv, a)
            out[f"stays{lv}@{axis}"] = stays_reached(traj, lv, a)
    for axis, costs in COST_POINTS.items():
        for c in costs:
            out[f"prec@{axis}={c}"] = at_cost(traj, c, SUMMARY_AXES.index(axis))
    return out


def _row(
    name: str, row: Dict[str, Any], seeds: Sequence[int], key: str, n: int
) -> RowResult:
    info = estimator_rows()[name]
    trajs = {k: [row["trajectories"][k][s] for s in seeds] for k in row["trajectories"]}
    runs = sorted(row["runs"], key=lambda r: (r.get("k", 0), r["seed"]))
    summary, per_seed = {}, {}
    for k, ts in trajs.items():
        infos = [
            next(r for r in runs if r["seed"] == s and r.get("k", int(k)) == int(k))
            for s in seeds
        ]
        seeds_keys = [_seed_keys(derive(t, n, i)) for t, i in zip(ts, infos)]
        per_seed[k] = {key_: [sk[key_] for sk in seeds_keys] for key_ in seeds_keys[0]}
        summary[k] = {
            key_: (
                statistics.median(float(v or 0.0) for v in vs)
                if key_.startswith("prec@")
                else _median(vs)
            )
            for key_, vs in per_seed[k].items()
        }
    batches = {r.get("batch_size") for r in runs if "batch_size" in r}
    batch = info["batch"]
    if len(batches) == 1:
        batch = batches.pop()
    if batch == "auto" or (batch is not None and int(batch) >= n):
        batch = None
    return RowResult(
        target=key,
        per_k=info["per_k"],
        summary=summary,
        per_seed=per_seed,
        trajectories=trajs,
        runs=runs,
        batch=batch,
    )


def summarise_cell(
    game, ks, budget, eps, names, keys, n_examples, done, seeds
) -> CellResult:
    r"""Medians over seeds of every row of one cell, from the finished runs."""
    _, ref = load_cell_game(game)
    used = sorted(set(keys.values()) | {"truncated", "untruncated"})
    for key in used:
        target_values(game, key)
    cell = CellResult(
        game=game,
        ks=list(ks),
        budget=budget,
        eps=eps,
        n_units=int(ref["truncated"].numel()),
        reference=_reference(ref, used, ks, eps),
        rows={
            name: _row(name, done[(game, name)], seeds, keys[name], n_examples)
            for name in names
        },
        n_examples=n_examples,
    )
    cell.target_gaps = {
        key: float((ref[key] - ref["truncated"]).abs().max())
        for key in used
        if key.startswith("truncated_b")
    }
    if "chains" in ref:
        cell.reference_chains = ref["chains"].tolist()
        cell.reference_evaluations = int(ref["evaluations"])
    return cell


#: The axes of the targets table.
TARGET_AXES = ("full_set", "fwd_cpu", "fwd_wall", "cpu_s", "wall_s")


def targets(cells: List[CellResult]) -> List[TargetRow]:
    r"""Per cell and k: the cost until the default's top-k stays at precision
    0.9, against plain truncated MC's and Captum's on all examples, on every
    axis of :data:`TARGET_AXES`; the best row (by examples); and the default's
    precision at the time of 200 plain forward passes on all examples, per
    seed."""
    out = []
    for cell in cells:
        rows = cell.rows
        for k in cell.ks:
            key = str(k)
            d = rows["default"].summary[key]
            p = rows["plain truncated MC"].summary[key]
            c = rows["Captum ShapleyValueSampling"].summary[key]
            best = min(
                (r.summary[key]["stays0.9@full_set"], n)
                for n, r in rows.items()
                if key in r.summary
            )
            d_runs = rows["default"].runs_at(k)
            out.append(
                TargetRow(
                    game=cell.game,
                    k=k,
                    budget=cell.budget,
                    default={a: d[f"stays0.9@{a}"] for a in TARGET_AXES},
                    plain={a: p[f"stays0.9@{a}"] for a in TARGET_AXES},
                    captum={a: c[f"stays0.9@{a}"] for a in TARGET_AXES},
                    best_row=best[1],
                    best=best[0],
                    default_batch=rows["default"].batch,
                    default_at_200_forwards=[
                        float(v or 0.0)
                        for v in rows["default"].per_seed[key]["prec@fwd_cpu=200"]
                    ],
                    forward_200_cpu_s=statistics.median(
                        r["forward_cpu_s"] * 200 / r["forwards"] for r in d_runs
                    ),
                    forward_200_wall_s=statistics.median(
                        r["forward_wall_s"] * 200 / r["forwards"] for r in d_runs
                    ),
                )
            )
    return out


#: The axes the winners are counted on.
WIN_AXES = ("full_set", "fwd_cpu")


def wins(cells: List[CellResult]) -> Wins:
    r"""For every (cell, k, sustained level, axis of :data:`WIN_AXES`): the rows
    with the smallest median cost (ties share the win; none when no row
    reached it)."""
    table: Dict[str, List[str]] = {}
    per: List[CellWin] = []
    for cell in cells:
        for k in cell.ks:
            for axis in WIN_AXES:
                for lv in LEVELS:
                    meds = {
                        n: r.summary[str(k)][f"stays{lv}@{axis}"]
                        for n, r in cell.rows.items()
                        if str(k) in r.summary
                    }
                    best = min(meds.values())
                    winners = (
                        []
                        if best == float("inf")
                        else [n for n, v in meds.items() if v == best]
                    )
                    per.append(CellWin(cell.game, k, lv, axis, winners, best))
                    for n in winners:
                        table.setdefault(n, []).append(
                            f"{cell.game} k={k} {lv} ({axis})"
                        )
    return Wins(per, table)


def from_partial(path: Path) -> TopkResults:
    r"""Results from the runs a cut-short benchmark kept in ``partial_runs.json``:
    the cells of :data:`~comparisons.bench.cells.CELLS`, each with the rows
    that finished every seed."""
    done: Dict[Tuple[str, str], Dict[str, Any]] = {}
    for (game, name), row in json.loads(Path(path).read_text()):
        row["trajectories"] = {
            k: {int(s): t for s, t in v.items()} for k, v in row["trajectories"].items()
        }
        done[(game, name)] = row
    seeds = sorted(
        {s for row in done.values() for v in row["trajectories"].values() for s in v}
    )
    all_rows = estimator_rows()
    cells = []
    for game, ks, budget, names in CELLS:
        names = tuple(
            n
            for n in names
            if (game, n) in done
            and all(
                len(v) == len(seeds) for v in done[(game, n)]["trajectories"].values()
            )
        )
        if not set(BASE_ROWS) <= set(names):
            continue
        bg, ref = load_cell_game(game)
        eps = game_epsilon(ref)
        keys = {
            n: target_key(
                all_rows[n]["target"], resolve_batch(bg, all_rows[n]["batch"])
            )
            for n in names
        }
        cells.append(
            summarise_cell(game, ks, budget, eps, names, keys, len(bg.x), done, seeds)
        )
    return TopkResults(seeds, float("nan"), cells)
