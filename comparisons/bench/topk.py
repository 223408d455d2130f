r"""Evaluations to the top-k (:func:`topk_benchmark`): every (cell, row, seed) run
spread over worker processes of one thread, each recording its running top-k's
precision (:mod:`~comparisons.bench.precision`); then, per cell and row, the
medians over seeds of the evaluations until the precision is first reached and
until it stays (:func:`summarise_cell`), the targets table (:func:`targets`) and
the winners (:func:`wins`). Every finished run is kept in ``partial_runs.json``
as it comes, so that a run cut short leaves what it measured
(:func:`from_partial` reads it back).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from .cells import CELLS, COST, game_epsilon, load_cell_game, QUICK_CELLS
from .precision import first_reached, K, LEVELS, Recorder, stays_reached
from .rows import BASE_ROWS, estimator_rows, K10_ONLY
from .summary import CellResult, CellWin, RowResult, TargetRow, TopkResults, Wins

__all__ = [
    "TopkOptions",
    "topk_benchmark",
    "summarise_cell",
    "targets",
    "wins",
    "from_partial",
    "fmt",
]

#: One run: ``(game, row, seed, ks, budget, eps)``.
Task = Tuple[str, str, int, Tuple[int, ...], int, float]


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


def fmt(v: Optional[float], budget: Optional[int] = None) -> str:
    r"""Evaluations, or ``"> budget"`` / ``"not reached"``."""
    if v is None or v == float("inf"):
        return "not reached" if budget is None else f"> {budget}"
    return f"{v:.0f}"


def _median(values: Sequence[Optional[int]]) -> float:
    return statistics.median(float("inf") if v is None else v for v in values)


def _run_task(task: Task):
    r"""One row of one cell for one seed, in a worker process: the trajectories of
    its running estimate at each k and the runs' info."""
    game, name, seed, ks, budget, eps = task
    torch.set_num_threads(1)
    bg, ref = load_cell_game(game)
    row = estimator_rows()[name]
    target = ref[row["target"]]
    trajs: Dict[int, List[Tuple[int, float]]] = {}
    infos = []
    if row["per_k"]:
        for k in ks:
            rec = Recorder(target, (k,), eps)
            info = row["run"](bg, rec, seed, budget, k, eps)
            trajs[k] = rec.trajectory(k)
            infos.append({"k": k, "seed": seed, **info})
    else:
        rec = Recorder(target, ks, eps)
        info = row["run"](bg, rec, seed, budget, None, eps)
        trajs = {k: rec.trajectory(k) for k in ks}
        infos.append({"seed": seed, **info})
    return task, trajs, infos


def _ref_only(game: str) -> Tuple[None, Dict[str, torch.Tensor]]:
    return None, load_cell_game(game)[1]


def _plan(opts: TopkOptions, seeds: List[int]):
    r"""The cells to run and every (weight, task), longest first."""
    all_rows = estimator_rows()
    cells = QUICK_CELLS if opts.quick else CELLS
    if opts.games:
        cells = [c for c in cells if c[0] in opts.games]
    plan, tasks = [], []
    for game, ks, budget, which in cells:
        _, ref = load_cell_game(game) if opts.jobs <= 1 else _ref_only(game)
        eps = game_epsilon(ref)
        names = list(which) or list(all_rows)
        if opts.rows:
            names = [n for n in names if n in opts.rows or n in BASE_ROWS]
        plan.append((game, ks, budget, eps, names, ref))
        cost = COST.get(game.split("/")[0], 1e-4) * budget
        for name in names:
            row_ks = (K,) if name in K10_ONLY and K in ks else ks
            weight = cost * (len(row_ks) if all_rows[name]["per_k"] else 1)
            for seed in seeds:
                tasks.append((weight, (game, name, seed, row_ks, budget, eps)))
    tasks.sort(key=lambda t: -t[0])
    return plan, [t for _, t in tasks]


class _Collector:
    r"""Gathers the finished runs, logs each and keeps them on disk."""

    def __init__(self, path: Path, log: Any) -> None:
        self.done: Dict[Tuple[str, str], Dict[str, Any]] = {}
        self.path, self.log = path, log
        self.t0 = time.perf_counter()

    def __call__(self, result) -> None:
        (game, name, seed, ks, budget, eps), trajs, infos = result
        row = self.done.setdefault((game, name), {"trajectories": {}, "runs": []})
        for k, traj in trajs.items():
            row["trajectories"].setdefault(str(k), {})[seed] = traj
        row["runs"] += infos
        wall = sum(i["wall_s"] for i in infos)
        reached = ", ".join(
            f"k={k}: stays 0.9 {fmt(stays_reached(t, 0.9), budget)}"
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
        summarise_cell(game, ks, budget, eps, names, ref, collect.done, seeds)
        for game, ks, budget, eps, names, ref in plan
    ]
    results = TopkResults(seeds, time.perf_counter() - collect.t0, cells)
    results.wins, results.targets = wins(cells), targets(cells)
    return results


def _reference(ref: Dict[str, torch.Tensor], ks: Sequence[int], eps: float):
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
        for key in ("truncated", "untruncated")
    }


def _row(name: str, row: Dict[str, Any], seeds: Sequence[int]) -> RowResult:
    info = estimator_rows()[name]
    trajs = {k: [row["trajectories"][k][s] for s in seeds] for k in row["trajectories"]}
    summary, per_seed = {}, {}
    for k, ts in trajs.items():
        per_seed[k] = {
            f"{how}{lv}": [f(t, lv) for t in ts]
            for lv in LEVELS
            for how, f in (("first", first_reached), ("stays", stays_reached))
        }
        summary[k] = {key: _median(v) for key, v in per_seed[k].items()}
    return RowResult(
        target=info["target"],
        per_k=info["per_k"],
        summary=summary,
        per_seed=per_seed,
        trajectories=trajs,
        runs=sorted(row["runs"], key=lambda r: (r.get("k", 0), r["seed"])),
    )


def summarise_cell(game, ks, budget, eps, names, ref, done, seeds) -> CellResult:
    r"""Medians over seeds of every row of one cell, from the finished runs."""
    cell = CellResult(
        game=game,
        ks=list(ks),
        budget=budget,
        eps=eps,
        n_units=int(ref["truncated"].numel()),
        reference=_reference(ref, ks, eps),
        rows={name: _row(name, done[(game, name)], seeds) for name in names},
    )
    if "chains" in ref:
        cell.reference_chains = ref["chains"].tolist()
        cell.reference_evaluations = int(ref["evaluations"])
    return cell


def _first_point(trajs: Sequence[Sequence[Sequence[float]]]) -> float:
    return statistics.median(float(t[0][0]) for t in trajs if t)


def targets(cells: List[CellResult]) -> List[TargetRow]:
    r"""Per cell and k: the default's evaluations to a top-k that stays at
    precision 0.9 against plain truncated MC's and Captum's, the best row, and what
    bounds the ratio: the evaluations of the default's first estimate (its first
    round: one cycle of ``strata`` chains) and plain MC's evaluations per chain."""
    out = []
    for cell in cells:
        rows = cell.rows
        per_chain = statistics.median(
            r["evaluations"] / max(r["chains"], 1)
            for r in rows["plain truncated MC"].runs
        )
        for k in cell.ks:
            key = str(k)
            d = rows["default"].summary[key]
            p = rows["plain truncated MC"].summary[key]
            c = rows["Captum ShapleyValueSampling"].summary[key]
            best = min(
                (r.summary[key]["stays0.9"], n)
                for n, r in rows.items()
                if key in r.summary
            )
            out.append(
                TargetRow(
                    game=cell.game,
                    k=k,
                    budget=cell.budget,
                    default={lv: d[f"stays{lv}"] for lv in LEVELS},
                    plain={lv: p[f"stays{lv}"] for lv in LEVELS},
                    captum={lv: c[f"stays{lv}"] for lv in LEVELS},
                    best_row=best[1],
                    best=best[0],
                    default_first_estimate=_first_point(
                        rows["default"].trajectories[key]
                    ),
                    plain_evaluations_per_chain=per_chain,
                )
            )
    return out


def wins(cells: List[CellResult]) -> Wins:
    r"""For every (cell, k, sustained level): the rows with the smallest median
    (ties share the win; none when no row reached it)."""
    table: Dict[str, List[str]] = {}
    per: List[CellWin] = []
    for cell in cells:
        for k in cell.ks:
            for lv in LEVELS:
                meds = {
                    n: r.summary[str(k)][f"stays{lv}"]
                    for n, r in cell.rows.items()
                    if str(k) in r.summary
                }
                best = min(meds.values())
                winners = (
                    []
                    if best == float("inf")
                    else [n for n, v in meds.items() if v == best]
                )
                per.append(CellWin(cell.game, k, lv, winners, best))
                for n in winners:
                    table.setdefault(n, []).append(f"{cell.game} k={k} {lv}")
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
        if not {"default", "plain truncated MC", "Captum ShapleyValueSampling"} <= set(
            names
        ):
            continue
        _, ref = load_cell_game(game)
        eps = game_epsilon(ref)
        cells.append(summarise_cell(game, ks, budget, eps, names, ref, done, seeds))
    return TopkResults(seeds, float("nan"), cells)
