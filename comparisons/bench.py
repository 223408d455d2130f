r"""Speed and scale benchmarks (``python -m comparisons.bench``).

Three measurements, each side by side in one run, written as markdown tables
and JSON (with the machine, versions and command) to ``--out``:

1. *Evaluations to the top-k.* On five games (:mod:`comparisons.bench_nets`: the
   embedded digits CNN with mean and zero removal, a residual CNN with batch norm
   whose top channels stand out, with zero and mean removal, and a 128-neuron MLP
   whose top-k needs hundreds of chains), the model evaluations each estimator
   needs until its estimated top-k (k = 3 and 10) first reaches, and until it stays
   at, epsilon-precision 0.9 and 1.0 against reference values from long
   independent runs (cached; the truncated target for the truncated chains, the
   Shapley values for the untruncated estimators). A unit counts as correct when
   its reference value is at least the reference k-th value minus epsilon (15% of
   the mean of the three largest values). Rows (:func:`estimator_rows`): the
   library's default, plain truncated Monte Carlo, Captum's
   ``ShapleyValueSampling`` through a mask wrapper over the same game, and the
   alternatives of :mod:`comparisons.estimators` (sample reuse, kernel SHAP,
   stratified SVARM, CMCS, LUCB, border-uncertainty sampling, a gradient prior,
   fewer exploration samples, batched evaluation). The (cell, row, seed) runs are
   spread over ``--jobs`` processes of one thread; medians over seeds, a table
   against the issue's targets, the winners per cell and a precision-against-
   evaluations figure. ``--quick``: one seconds-long cell on the tests' 7-filter
   CNN with exact values (no cache needed). ``--render``: lay the markdown out
   again from a run's ``bench.json``.
2. *Throughput.* Coalition evaluations per second against plain forward passes per
   second of the unmodified model on the same examples, interleaved in blocks, with
   all conv layers ablated and with only the last layer(s) ablated.
3. *Scale.* ResNet-18 (4,800 filters) and Inception-v3 (17,216 filters) with random
   weights: evaluations per second and peak memory, on the GPU when available.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import captum
import torch
from captum.attr import ShapleyValueSampling

from captum_neuron_shapley import Callback, FilterShapley, PermutationSampler
from captum_neuron_shapley.examples import load_digits_splits, trained_digits_cnn

EPS = 0.005  # tolerance of the epsilon-precision on the digits CNN (accuracy units)
K = 10
KS = (3, 10)
LEVELS = (0.9, 1.0)  # precisions reported
#: ``perturbations_per_eval`` of the chain estimators: the library's default, so that
#: a chain never evaluates a state after the one that fell to the threshold.
PPE = 1
#: Coalitions per forward pass of the untruncated estimators (nothing to truncate,
#: so batching changes their wall time only).
BATCH = 8
#: Evaluations charged for the gradient prior: one forward and one backward pass
#: over the evaluation set (a backward pass costs about two forward passes).
PRIOR_COST = 3


def precision(
    values: torch.Tensor, reference: torch.Tensor, k: int = K, eps: float = EPS
) -> float:
    r"""Fraction of the estimated top-k whose reference value is within ``eps`` of
    the reference k-th value or above it."""
    kth = torch.topk(reference, k).values[-1]
    top = torch.topk(values, k).indices
    return float((reference[top] >= kth - eps).double().mean())


class Recorder:
    r"""Collects ``(evaluations, precision at each k)`` of a run's running estimate
    against its target's reference values (only the points where a precision
    changes, and the last one: enough for first and sustained precision)."""

    def __init__(
        self, reference: torch.Tensor, ks: Sequence[int], eps: float, offset: int = 0
    ) -> None:
        self.reference, self.ks, self.eps = reference, tuple(ks), eps
        self.offset = offset
        self.points: List[Tuple[int, Tuple[float, ...]]] = []
        self.last: Optional[Tuple[int, Tuple[float, ...]]] = None

    def __call__(self, n_evaluations: int, values: torch.Tensor) -> None:
        prec = tuple(precision(values, self.reference, k, self.eps) for k in self.ks)
        point = (int(n_evaluations) + self.offset, prec)
        if not self.points or self.points[-1][1] != prec:
            self.points.append(point)
        self.last = point

    def trajectory(self, k: int) -> List[Tuple[int, float]]:
        i = self.ks.index(k)
        pts = list(self.points)
        if self.last is not None and self.last is not pts[-1]:
            pts.append(self.last)
        return [(e, p[i]) for e, p in pts]


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


# -- the games -------------------------------------------------------------------


@dataclass
class QuickGame:
    r"""The tests' 7-filter CNN on blob images (``--quick``), with exact values by
    enumeration as its reference: a cell that runs in seconds."""

    name: str
    attr: Any
    x: torch.Tensor
    y: torch.Tensor
    baselines: str = "zero"

    def game(self, perturbations_per_eval: int = 1):
        return self.attr.game(
            self.x,
            target=self.y,
            layer_baselines=self.baselines,
            perturbations_per_eval=perturbations_per_eval,
        )

    def attribute(self, **kwargs: Any):
        return self.attr.attribute(
            self.x,
            target=self.y,
            layer_baselines=self.baselines,
            return_result=True,
            **kwargs,
        )


QUICK_GAME = "tiny-cnn/zero"
_LOADED: Dict[str, Tuple[Any, Dict[str, torch.Tensor]]] = {}


def load_cell_game(name: str) -> Tuple[Any, Dict[str, torch.Tensor]]:
    r"""The game called ``name`` and its reference values (``"truncated"``: the
    target of ``truncation="auto"`` chains; ``"untruncated"``: Shapley values)."""
    if name in _LOADED:
        return _LOADED[name]
    if name == QUICK_GAME:
        from captum_neuron_shapley.exact import exact_values
        from captum_neuron_shapley.sampler import truncation_threshold

        from .games import blobs, train_tiny

        x, y = blobs(200, torch.Generator().manual_seed(0))
        model = train_tiny(x, y)
        bg: Any = QuickGame(
            name, FilterShapley(model, [model.conv1, model.conv2]), x, y
        )
        game = bg.game()
        thr = truncation_threshold("auto", game.full_value(), game.empty_value())
        ref = {
            "truncated": exact_values(game, thr),
            "untruncated": exact_values(game),
        }
    else:
        from .bench_nets import bench_game, reference

        bg = bench_game(name)
        ref = reference(bg)
    _LOADED[name] = (bg, ref)
    return bg, ref


def game_epsilon(ref: Dict[str, torch.Tensor]) -> float:
    r"""A cell's tolerance: 15% of the mean of the three largest Shapley values (the
    reference's), rounded to 0.0005, so that it scales with the game's values
    (0.005 on the digits CNN with mean removal, the value of earlier runs)."""
    top3 = torch.topk(ref["untruncated"], 3).values.mean()
    return max(0.0005, round(float(0.15 * top3) / 0.0005) * 0.0005)


# -- the estimators ------------------------------------------------------------------

T, U = "truncated", "untruncated"


def _attribute(bg, rec: Recorder, seed: int, budget: int, sampler=None, **kw):
    r"""``attribute`` with the library's defaults but for ``kw``, recording the
    running estimate after every round; ``sampler`` (a sampler object, such as a
    :class:`~comparisons.estimators.SelectingSampler`) replaces the default."""
    kw.setdefault("perturbations_per_eval", PPE)
    if sampler is not None:
        kw["sampler"] = sampler
    t = time.perf_counter()
    res = bg.attribute(
        seed=seed,
        max_evaluations=budget,
        stop=Callback(lambda e: rec(e.n_evaluations, e.stats.mean)),
        **kw,
    )
    return {
        "converged": bool(res.converged),
        "evaluations": int(res.n_evaluations),
        "chains": int(res.n_permutations),
        "wall_s": time.perf_counter() - t,
    }


def _svs(bg, rec: Recorder, seed: int, budget: int, k=None, eps=None):
    r"""Captum ``ShapleyValueSampling`` through a mask wrapper over the same game.
    Its estimate with ``n_samples = m`` is the mean of ``m`` independent
    permutations, so it is run one permutation at a time (each seeded from
    ``seed``) and the running mean is recorded after every permutation."""
    game = bg.game(BATCH)
    svs = ShapleyValueSampling(lambda m: game.value(m > 0.5).float())
    total = torch.zeros(game.n_units, dtype=torch.float64)
    t, m = time.perf_counter(), 0
    while game.n_evaluations + game.n_units + 1 <= budget:
        with torch.random.fork_rng(devices=[]):  # Captum samples with the global RNG
            torch.manual_seed(seed * 1_000_003 + m)
            total += svs.attribute(
                torch.ones(1, game.n_units),
                baselines=0.0,
                n_samples=1,
                perturbations_per_eval=BATCH,
            )[0].double()
        m += 1
        rec(game.n_evaluations, total / m)
    return {
        "converged": False,
        "evaluations": game.n_evaluations,
        "chains": m,
        "wall_s": time.perf_counter() - t,
    }


def _standalone(fn: Callable, **extra: Any) -> Callable:
    def run(bg, rec: Recorder, seed: int, budget: int, k=None, eps=None):
        game = bg.game(BATCH)
        t = time.perf_counter()
        kw = dict(extra)
        if k is not None:
            kw["top_k"] = k
        fn(game, budget, seed, rec, **kw)
        return {
            "converged": False,
            "evaluations": game.n_evaluations,
            "wall_s": time.perf_counter() - t,
        }

    return run


def _prior(bg, rec: Recorder, seed: int, budget: int, k: int, eps: float):
    r"""Gradient x activation (Captum's ``LayerGradientXActivation`` averaged over
    the evaluation set) decides which ``3 k`` units are explored first; charged
    :data:`PRIOR_COST` evaluations. The estimates are the default's."""
    from .baselines import gradient_x_activation
    from .estimators import prior_selector, selecting

    model = bg.attr.forward_func
    prior = gradient_x_activation(model, bg.attr._layers, bg.x, bg.y).flatten()
    rec.offset = PRIOR_COST
    smp = selecting(prior_selector(prior, 3 * k))
    return _attribute(bg, rec, seed, budget - PRIOR_COST, smp, top_k=k, epsilon=eps)


def estimator_rows() -> Dict[str, Dict[str, Any]]:
    r"""Every estimator of the benchmark: ``{name: {"run", "target", "per_k"}}``.
    ``run(bg, recorder, seed, budget, k, eps)``; ``target``: the reference it is
    scored against (``"truncated"``: the target of the chains with
    ``truncation="auto"``; ``"untruncated"``: the Shapley values); ``per_k``: one
    run per k (it uses k to choose what to sample or when to stop), otherwise one
    run scored at every k."""
    from . import estimators as E

    def default(**kw):
        return lambda bg, r, s, b, k, eps: _attribute(
            bg, r, s, b, top_k=k, epsilon=eps, **kw
        )

    def select(make):
        return lambda bg, r, s, b, k, eps: _attribute(
            bg, r, s, b, E.selecting(make(k)), top_k=k, epsilon=eps
        )

    return {
        "default": {"run": default(), "target": T, "per_k": True},
        "plain truncated MC": {
            "run": lambda bg, r, s, b, k=None, eps=None: _attribute(
                bg, r, s, b, PermutationSampler(strata=1), epsilon=0.0
            ),
            "target": T,
            "per_k": False,
        },
        "Captum ShapleyValueSampling": {"run": _svs, "target": U, "per_k": False},
        "stratified truncated MC (bandit off)": {
            "run": lambda bg, r, s, b, k=None, eps=None: _attribute(
                bg, r, s, b, epsilon=0.0
            ),
            "target": T,
            "per_k": False,
        },
        "maximum sample reuse, regression-adjusted": {
            "run": _standalone(E.msr),
            "target": U,
            "per_k": False,
        },
        "kernel SHAP, paired": {
            "run": _standalone(E.kernel_shap),
            "target": U,
            "per_k": False,
        },
        "stratified SVARM": {
            "run": _standalone(E.stratified_svarm),
            "target": U,
            "per_k": False,
        },
        "CMCS, greedy selection": {
            "run": _standalone(E.cmcs_greedy),
            "target": U,
            "per_k": True,
        },
        "LUCB boundary arms": {
            "run": select(E.lucb_selector),
            "target": T,
            "per_k": True,
        },
        "border-uncertainty sampling": {
            "run": select(E.border_selector),
            "target": T,
            "per_k": True,
        },
        "gradient prior (sampling order only)": {
            "run": _prior,
            "target": T,
            "per_k": True,
        },
        "min_samples=2 (2 cycles)": {
            "run": default(min_samples=2),
            "target": T,
            "per_k": True,
        },
        "default, perturbations_per_eval=8": {
            "run": default(perturbations_per_eval=8),
            "target": T,
            "per_k": True,
        },
    }


#: Rows every cell runs: the default and the two baselines of the issue's targets.
BASE_ROWS = ("default", "plain truncated MC", "Captum ShapleyValueSampling")
#: Estimators that reuse every evaluation (candidates for another default).
REUSE_ROWS = ("maximum sample reuse, regression-adjusted", "stratified SVARM")
#: Top-k selection and shorter exploration on the library's chains.
TOPK_ROWS = (
    "LUCB boundary arms",
    "border-uncertainty sampling",
    "CMCS, greedy selection",
    "gradient prior (sampling order only)",
)
#: Rows run at k = 10 only where the cell also has k = 3 (to save time).
K10_ONLY = TOPK_ROWS + (
    "min_samples=2 (2 cycles)",
    "default, perturbations_per_eval=8",
    "stratified truncated MC (bandit off)",
    "kernel SHAP, paired",
)

#: The cells: (game, ks, evaluations per run, rows). Sized so that the whole
#: top-k benchmark takes about 40 minutes on 2 CPU cores (of which the digits CNN
#: evaluates about 110 coalitions per second per core): every row of the issue runs
#: on the fast 128-neuron MLP, the top-k selection rows also on the residual
#: network, the estimators that reuse every evaluation on most cells.
CELLS: List[Tuple[str, Tuple[int, ...], int, Tuple[str, ...]]] = [
    (
        "digits-cnn/mean",
        (10,),
        3000,
        BASE_ROWS + REUSE_ROWS + ("kernel SHAP, paired", "min_samples=2 (2 cycles)"),
    ),
    ("digits-cnn/zero", (10,), 3000, BASE_ROWS + REUSE_ROWS[:1]),
    ("digits-resnet/zero", (3, 10), 3000, BASE_ROWS + REUSE_ROWS + TOPK_ROWS),
    ("digits-resnet/mean", (10,), 3000, BASE_ROWS + REUSE_ROWS[:1]),
    (
        "digits-mlp/zero",
        (3, 10),
        25000,
        tuple(
            n
            for n in (
                BASE_ROWS
                + ("stratified truncated MC (bandit off)", "kernel SHAP, paired")
                + REUSE_ROWS
                + TOPK_ROWS
                + ("min_samples=2 (2 cycles)", "default, perturbations_per_eval=8")
            )
        ),
    ),
]
QUICK_CELLS: List[Tuple[str, Tuple[int, ...], int, Tuple[str, ...]]] = [
    (QUICK_GAME, (3,), 300, ()),  # () : every row
]
#: Rough seconds per evaluation on one core (orders the tasks, longest first).
_COST = {"digits-cnn": 9e-3, "digits-resnet": 5.5e-3, "digits-mlp": 7e-4}


def _run_task(task: Tuple[str, str, int, Tuple[int, ...], int, float]):
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


def _median(values: Sequence[Optional[int]]) -> float:
    return statistics.median(float("inf") if v is None else v for v in values)


def _fmt(v: Optional[float], budget: Optional[int] = None) -> str:
    if v is None or v == float("inf"):
        return "not reached" if budget is None else f"> {budget}"
    return f"{v:.0f}"


def _ratio(value: float, base: float) -> str:
    if base == float("inf"):
        return "-"
    if value == float("inf"):
        return "> budget"
    return f"{value / base:.1f}x"


def _ratio_bound(value: float, base: float, budget: int) -> str:
    r"""``value / base``, or a lower bound ``>= budget / base`` when the other
    estimator never got there."""
    if base == float("inf"):
        return "-"
    if value == float("inf"):
        return f">= {budget / base:.1f}x"
    return f"{value / base:.1f}x"


def topk_benchmark(args, out: Path, lines: List[str]) -> Dict[str, Any]:
    r"""Every cell of :data:`CELLS` (:data:`QUICK_CELLS` with ``--quick``), the
    (cell, row, seed) runs spread over ``--jobs`` processes; returns the
    JSON-ready results and appends the markdown tables to ``lines``."""
    import multiprocessing as mp

    all_rows = estimator_rows()
    seeds = [100 + s for s in range(args.seeds)]
    cells = QUICK_CELLS if args.quick else CELLS
    if args.games:
        cells = [c for c in cells if c[0] in args.games]
    plan = []
    tasks = []
    for game, ks, budget, which in cells:
        _, ref = load_cell_game(game) if args.jobs <= 1 else _ref_only(game)
        eps = game_epsilon(ref)
        names = list(which) or list(all_rows)
        if args.rows:
            names = [n for n in names if n in args.rows or n in BASE_ROWS]
        plan.append((game, ks, budget, eps, names, ref))
        cost = _COST.get(game.split("/")[0], 1e-4) * budget
        for name in names:
            row_ks = (K,) if name in K10_ONLY and K in ks else ks
            weight = cost * (len(row_ks) if all_rows[name]["per_k"] else 1)
            for seed in seeds:
                tasks.append((weight, (game, name, seed, row_ks, budget, eps)))
    tasks.sort(key=lambda t: -t[0])
    done: Dict[Tuple[str, str], Dict[str, Any]] = {}
    partial = out / "partial_runs.json"
    t0 = time.perf_counter()

    def collect(result) -> None:
        (game, name, seed, ks, budget, eps), trajs, infos = result
        row = done.setdefault((game, name), {"trajectories": {}, "runs": []})
        for k, traj in trajs.items():
            row["trajectories"].setdefault(str(k), {})[seed] = traj
        row["runs"] += infos
        wall = sum(i["wall_s"] for i in infos)
        reached = ", ".join(
            f"k={k}: stays 0.9 {_fmt(stays_reached(t, 0.9), budget)}"
            for k, t in trajs.items()
        )
        print(
            f"[{time.perf_counter() - t0:6.0f}s] {game} | {name} | seed {seed} | "
            f"{reached} | {wall:.0f}s",
            flush=True,
        )
        # every finished run is kept on disk as it comes (a run cut short leaves
        # what it measured)
        partial.write_text(
            json.dumps([[list(k), v] for k, v in done.items()], default=float)
        )

    if args.jobs <= 1:
        for _, task in tasks:
            collect(_run_task(task))
    else:
        ctx = mp.get_context("spawn")
        with ctx.Pool(args.jobs, initializer=torch.set_num_threads, initargs=(1,)) as p:
            for result in p.imap_unordered(_run_task, [t for _, t in tasks]):
                collect(result)
    results: Dict[str, Any] = {
        "seeds": seeds,
        "wall_s": time.perf_counter() - t0,
        "cells": [],
    }
    for game, ks, budget, eps, names, ref in plan:
        cell = _summarise_cell(game, ks, budget, eps, names, ref, done, seeds)
        results["cells"].append(cell)
    results["wins"] = wins(results["cells"])
    results["targets"] = targets(results["cells"])
    lines += render_topk(results, out)
    return results


def render_topk(results: Dict[str, Any], out: Path) -> List[str]:
    r"""The markdown of the top-k part (and its figure in ``out``) from the results
    of :func:`topk_benchmark` (also as read back from ``bench.json``)."""
    lines: List[str] = []
    lines += _targets_markdown(results["targets"])
    for cell in results["cells"]:
        lines += _cell_markdown(cell)
    lines += _wins_markdown(results["wins"])
    fig = plot_precision(results, out / "precision.png")
    lines += ["", f"![precision against evaluations]({fig.name})", ""]
    return lines


def _first_point(trajs: Sequence[Sequence[Sequence[float]]]) -> float:
    return statistics.median(float(t[0][0]) for t in trajs if t)


def targets(cells: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    r"""Per cell and k: the default's evaluations to a top-k that stays at
    precision 0.9 against plain truncated MC's and Captum's, the best row, and what
    bounds the ratio: the evaluations of the default's first estimate (its first
    round: one cycle of ``strata`` chains) and plain MC's evaluations per chain."""
    out = []
    for cell in cells:
        rows = cell["rows"]
        plain_runs = rows["plain truncated MC"]["runs"]
        per_chain = statistics.median(
            r["evaluations"] / max(r["chains"], 1) for r in plain_runs
        )
        for k in cell["ks"]:
            key = str(k)
            d = rows["default"]["summary"][key]
            p = rows["plain truncated MC"]["summary"][key]
            c = rows["Captum ShapleyValueSampling"]["summary"][key]
            best = min(
                (r["summary"][key]["stays0.9"], n)
                for n, r in rows.items()
                if key in r["summary"]
            )
            out.append(
                {
                    "game": cell["game"],
                    "k": k,
                    "budget": cell["budget"],
                    "default": {lv: d[f"stays{lv}"] for lv in LEVELS},
                    "plain": {lv: p[f"stays{lv}"] for lv in LEVELS},
                    "captum": {lv: c[f"stays{lv}"] for lv in LEVELS},
                    "best_row": best[1],
                    "best": best[0],
                    "default_first_estimate": _first_point(
                        rows["default"]["trajectories"][key]
                    ),
                    "plain_evaluations_per_chain": per_chain,
                }
            )
    return out


def _targets_markdown(rows: List[Dict[str, Any]]) -> List[str]:
    out = [
        "### Against the issue's targets (sustained top-k precision 0.9)",
        "",
        "Medians of the seeds' evaluations until the running top-k is at precision "
        "0.9 from then on to the end of the run. Target: the default needs 10x fewer "
        "than plain truncated MC and 30x fewer than Captum's ShapleyValueSampling. "
        "*default's first estimate*: evaluations when the default first reports "
        "anything (its first round, a cycle of 4 truncated chains); *ceiling*: "
        "plain MC's evaluations over it, the largest ratio to plain MC the default "
        "can show on this cell, whatever its bandit does.",
        "",
        "| game | k | default | plain truncated MC | ratio | Captum SVS | ratio | "
        "best row (ratio to plain / to Captum) | default's first estimate | "
        "plain MC evaluations per chain | ceiling |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in rows:
        d, p, c, b = t["default"][0.9], t["plain"][0.9], t["captum"][0.9], t["best"]
        budget, first = t["budget"], t["default_first_estimate"]
        best = (
            f"{t['best_row']}: {_fmt(b, budget)} "
            f"({_ratio_bound(p, b, budget)} / {_ratio_bound(c, b, budget)})"
        )
        ceiling = "-" if p == float("inf") else f"{p / first:.1f}x"
        out.append(
            f"| {t['game']} | {t['k']} | {_fmt(d, budget)} | {_fmt(p, budget)} | "
            f"{_ratio_bound(p, d, budget)} | {_fmt(c, budget)} | "
            f"{_ratio_bound(c, d, budget)} | {best} | {first:.0f} | "
            f"{t['plain_evaluations_per_chain']:.0f} | {ceiling} |"
        )
    out.append("")
    return out


def _ref_only(game: str) -> Tuple[None, Dict[str, torch.Tensor]]:
    return None, load_cell_game(game)[1]


def _summarise_cell(game, ks, budget, eps, names, ref, done, seeds) -> Dict[str, Any]:
    all_rows = estimator_rows()
    cell: Dict[str, Any] = {
        "game": game,
        "ks": list(ks),
        "budget": budget,
        "eps": eps,
        "n_units": int(ref["truncated"].numel()),
        "reference": {
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
        },
        "rows": {},
    }
    if "chains" in ref:
        cell["reference_chains"] = ref["chains"].tolist()
        cell["reference_evaluations"] = int(ref["evaluations"])
    for name in names:
        row = done[(game, name)]
        trajs = {
            k: [row["trajectories"][k][s] for s in seeds] for k in row["trajectories"]
        }
        summary = {}
        per_seed = {}
        for k, ts in trajs.items():
            per_seed[k] = {
                f"{how}{lv}": [f(t, lv) for t in ts]
                for lv in LEVELS
                for how, f in (("first", first_reached), ("stays", stays_reached))
            }
            summary[k] = {key: _median(v) for key, v in per_seed[k].items()}
        cell["rows"][name] = {
            "target": all_rows[name]["target"],
            "per_k": all_rows[name]["per_k"],
            "summary": summary,
            "per_seed": per_seed,
            "trajectories": trajs,
            "runs": sorted(row["runs"], key=lambda r: (r.get("k", 0), r["seed"])),
        }
    return cell


def wins(cells: List[Dict[str, Any]]) -> Dict[str, Any]:
    r"""For every (cell, k, sustained level): the rows with the smallest median
    (ties share the win; none when no row reached it)."""
    table: Dict[str, List[str]] = {}
    per: List[Dict[str, Any]] = []
    for cell in cells:
        for k in cell["ks"]:
            for lv in LEVELS:
                key = f"stays{lv}"
                meds = {
                    n: r["summary"][str(k)][key]
                    for n, r in cell["rows"].items()
                    if str(k) in r["summary"]
                }
                best = min(meds.values())
                winners = (
                    []
                    if best == float("inf")
                    else [n for n, v in meds.items() if v == best]
                )
                per.append(
                    {
                        "game": cell["game"],
                        "k": k,
                        "level": lv,
                        "winners": winners,
                        "evaluations": best,
                    }
                )
                for n in winners:
                    table.setdefault(n, []).append(f"{cell['game']} k={k} {lv}")
    return {"cells": per, "by_row": table}


def _wins_markdown(w: Dict[str, Any]) -> List[str]:
    out = [
        "### Winners (smallest median evaluations to a top-k that stays right)",
        "",
        "| game | k | precision | winner(s) | evaluations |",
        "|---|---|---|---|---|",
    ]
    for c in w["cells"]:
        out.append(
            f"| {c['game']} | {c['k']} | {c['level']} | "
            f"{', '.join(c['winners']) or 'none reached it'} | "
            f"{_fmt(c['evaluations'])} |"
        )
    out += ["", "Cells won, by estimator:", ""]
    for n, cs in sorted(w["by_row"].items(), key=lambda kv: -len(kv[1])):
        out.append(f"- {n}: {len(cs)} ({'; '.join(cs)})")
    out.append("")
    return out


def _cell_markdown(cell: Dict[str, Any]) -> List[str]:
    out: List[str] = []
    budget = cell["budget"]
    for k in cell["ks"]:
        refs = cell["reference"]
        rows = cell["rows"]
        base = rows["default"]["summary"][str(k)]
        out += [
            f"### {cell['game']}, top-{k} ({cell['n_units']} units, epsilon "
            f"{cell['eps']:g}, {budget} evaluations per run)",
            "",
            f"Correct units (reference value >= k-th - epsilon): "
            f"{refs['truncated'][str(k)]['acceptable']} against the truncated "
            f"target, {refs['untruncated'][str(k)]['acceptable']} against the "
            "Shapley values.",
            "",
            "| estimator | target | first 0.9 | stays 0.9 | x default | first 1.0 | "
            "stays 1.0 | x default | stopped by its rule |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, row in rows.items():
            if str(k) not in row["summary"]:
                continue
            sm = row["summary"][str(k)]
            runs = [r for r in row["runs"] if r.get("k", k) == k]
            conv = sum(bool(r["converged"]) for r in runs)
            rule = f"{conv}/{len(runs)}" if row["per_k"] and row["target"] == T else "-"
            cells = []
            for lv in LEVELS:
                f, st = sm[f"first{lv}"], sm[f"stays{lv}"]
                cells += [
                    _fmt(f, budget),
                    _fmt(st, budget),
                    _ratio_bound(st, base[f"stays{lv}"], budget),
                ]
            out.append(
                f"| {name} | {row['target']} | " + " | ".join(cells) + f" | {rule} |"
            )
        plain = rows["plain truncated MC"]
        pr = [r for r in plain["runs"]]
        per_chain = statistics.median(
            r["evaluations"] / max(r["chains"], 1) for r in pr
        )
        d_runs = [r for r in rows["default"]["runs"] if r.get("k") == k]
        out += [
            "",
            "Per seed, stays 0.9: "
            + "; ".join(
                f"{n}: "
                + ", ".join(
                    _fmt(v, budget) for v in rows[n]["per_seed"][str(k)]["stays0.9"]
                )
                for n in BASE_ROWS
            )
            + f". Plain truncated MC spends {per_chain:.0f} evaluations per chain "
            f"(median); the default stopped after a median of "
            f"{statistics.median(r['evaluations'] for r in d_runs):.0f} evaluations "
            f"({statistics.median(r['chains'] for r in d_runs):.0f} chains).",
            "",
        ]
    return out


def plot_precision(results: Dict[str, Any], path: Path) -> Path:
    r"""Mean (over seeds) precision of each row's running top-k (the cell's largest
    k) against the evaluations spent, one panel per cell; a run that stopped keeps
    its final estimate to the end of the budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = results["cells"]
    fig, axes = plt.subplots(1, len(cells), figsize=(4.4 * len(cells), 3.8))
    axes = [axes] if len(cells) == 1 else list(axes)
    for ax, cell in zip(axes, cells):
        k = str(max(cell["ks"]))
        grid = torch.linspace(0, cell["budget"], 201, dtype=torch.float64)
        for name, row in cell["rows"].items():
            if k not in row["trajectories"]:
                continue
            curves = []
            for traj in row["trajectories"][k]:
                ev = torch.tensor([e for e, _ in traj], dtype=torch.float64)
                pr = torch.tensor([p for _, p in traj], dtype=torch.float64)
                i = torch.searchsorted(ev, grid, right=True) - 1
                curves.append(torch.where(i >= 0, pr[i.clamp_min(0)], float("nan")))
            style = "-" if name in BASE_ROWS else "--"
            ax.plot(grid, torch.stack(curves).nanmean(0), style, label=name, lw=1.3)
        ax.axhline(0.9, color="k", ls=":", lw=1)
        ax.set_title(f"{cell['game']}, top-{k}, eps {cell['eps']:g}", fontsize=9)
        ax.set_xlabel("model evaluations")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("top-k epsilon-precision (mean of seeds)")
    axes[-1].legend(fontsize=6, loc="lower right")
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


def _from_partial(path: Path) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    r"""Results from the runs a cut-short benchmark kept in ``partial_runs.json``:
    the cells of :data:`CELLS`, each with the rows that finished every seed."""
    done: Dict[Tuple[str, str], Dict[str, Any]] = {}
    for (game, name), row in json.loads(path.read_text()):
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
        if "default" not in names or "plain truncated MC" not in names:
            continue
        if "Captum ShapleyValueSampling" not in names:
            continue
        _, ref = load_cell_game(game)
        eps = game_epsilon(ref)
        cells.append(_summarise_cell(game, ks, budget, eps, names, ref, done, seeds))
    res = {"seeds": seeds, "wall_s": float("nan"), "cells": cells}
    report = {
        "command": "python -m comparisons.bench (cut short; partial_runs.json)",
        "machine": platform.platform(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "jobs": 2,
        "torch": torch.__version__,
        "captum": captum.__version__,
    }
    return report, res


def render(path: Path, out: Path) -> int:
    r"""Rewrite ``topk.md`` (and the figure) in ``out`` from a run's JSON: the
    same numbers as that run's ``bench.md``, laid out by the current code."""
    if path.name == "partial_runs.json":
        report, res = _from_partial(path)
    else:
        report = json.loads(path.read_text())
        res = report["evaluations_to_topk"]
    for t in res.get("targets", []):
        for key in ("default", "plain", "captum"):
            t[key] = {float(lv): v for lv, v in t[key].items()}
    res["targets"] = targets(res["cells"])
    res["wins"] = wins(res["cells"])
    lines = [
        f"`{report['command']}` on {report['machine']} ({report['processor']}), "
        f"{report['cpus']} CPUs, {report['jobs']} processes of 1 thread, torch "
        f"{report['torch']}, captum {report['captum']}; top-k part "
        f"{res['wall_s'] / 60:.0f} min wall-clock.",
        "",
    ]
    lines += render_topk(res, out)
    (out / "topk.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m comparisons.bench")
    p.add_argument("--out", default="comparisons_out/bench")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="processes for the top-k runs (1 thread each)",
    )
    p.add_argument("--games", nargs="*", help="only these cells (default: all)")
    p.add_argument(
        "--rows", nargs="*", help="only these estimator rows (and the baselines)"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a seconds-long top-k run on the tests' 7-filter CNN with exact values",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument(
        "--skip", nargs="*", default=[], choices=["topk", "throughput", "scale"]
    )
    p.add_argument(
        "--render",
        metavar="BENCH_JSON",
        help="only rewrite the top-k markdown (into --out) from a run's bench.json",
    )
    p.add_argument("--scale-child", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=112, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.scale_child:
        _scale_child(args.scale_child, args.device, args.batch, args.size)
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.render:
        return render(Path(args.render), out)
    torch.set_num_threads(1)
    report: Dict[str, object] = {
        "command": "python -m comparisons.bench " + " ".join(argv or sys.argv[1:]),
        "machine": platform.platform(),
        "processor": platform.processor(),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "jobs": args.jobs,
        "torch": torch.__version__,
        "captum": captum.__version__,
    }
    lines = [
        "# Benchmarks",
        "",
        f"`{report['command']}` on {report['machine']}, "
        f"{report['cpus']} CPUs, {args.jobs} processes of {report['threads']} thread, "
        f"torch {report['torch']}, captum {report['captum']}.",
        "",
    ]

    if "topk" not in args.skip:
        t = time.perf_counter()
        report["evaluations_to_topk"] = topk_benchmark(args, out, lines)
        lines.insert(3, f"Top-k part: {time.perf_counter() - t:.0f} s wall-clock.")

    if "throughput" not in args.skip and not args.quick:
        data, model = load_digits_splits(), trained_digits_cnn()
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

    if "scale" not in args.skip and not args.quick:
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
