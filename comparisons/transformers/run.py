r"""A run of the transformer comparison (:func:`run_transformers`): every study
in turn (:func:`run_study`), the figures, then ``report.md`` and
``results.json``; :func:`render_saved` lays a saved run out again.

One study, stage by stage: the estimation game (its removal baselines are the
ones every method is judged with), the Shapley runs (one per estimator seed),
their greedy removal sets (``refine="greedy"``'s search, continued to ``K``),
the full greedy search and, for heads, the exact Shapley values (references),
the gradient baselines and leave-one-out, random orders, then every ordering's
removal curve on the held-out test split and the per-k winners. Every method
is timed and its forward and backward passes counted with hooks on the same
module, in the same run.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable, cast, Dict, List, Optional, Sequence, Tuple

import torch

from captum_neuron_shapley.exact import exact_values
from captum_neuron_shapley.metrics import Accuracy
from captum_neuron_shapley.refine import default_pool_size
from torch import Tensor

from ..cost import Cost, count_cost
from ..environment import Environment
from ..methods import baselines as B, MethodStatus, transformer as T
from ..methods.greedy import greedy_sets, GreedySearch
from ..methods.shapley import run_shapley, shapley_status, ShapleyRun
from ..protocol import per_k_winners, prefix_curves, ranking
from ..report.summary import CostSummary, Curve, KWinners, RefineInfo, ShapleyRunInfo
from ..scenario import Scenario
from ..text import plural
from .figures import draw_all
from .markdown import render
from .options import COMPETING, STUDIES, study_key, TransformerOptions
from .studies import build_study, Study, TaskAccuracy
from .summary import MechanismRanks, StudySummary, TransformerSummary

__all__ = ["run_study", "run_transformers", "render_saved", "write_files"]

#: Seed of the random removal orders.
RANDOM_ORDER_SEED = 1234

Log = Callable[[str], None]


def _median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def _bound(run: ShapleyRun, sign: float) -> List[float]:
    r"""One end of the run's confidence intervals, per unit (flat)."""
    res = run.result
    return (res.flat_values + sign * res.flat_radius).double().tolist()


class _StudyRun:
    r"""The stages of one study (see the module's docstring)."""

    def __init__(self, study: Study, opts: TransformerOptions, log: Log) -> None:
        self.s, self.opts, self.log = study, opts, log
        self.obj = study.shapley()
        self.kw = study.game_kwargs()
        self.orders: Dict[str, List[List[int]]] = {}
        self.scores: Dict[str, torch.Tensor] = {}
        self.costs: Dict[str, CostSummary] = {}
        self.status: Dict[str, MethodStatus] = {}
        self.exact: Optional[torch.Tensor] = None

    def run(self) -> StudySummary:
        t0 = time.perf_counter()
        self._game()
        self._shapley()
        self._greedy()
        self._exact()
        self._baselines()
        self._random()
        curves = self._curves()
        return self._summary(curves, time.perf_counter() - t0)

    # -- stages ------------------------------------------------------------------

    def _game(self) -> None:
        s = self.s
        self.game = self.obj.game(s.x_est, target=s.y_est, metric=s.metric, **self.kw)
        self.base: Tuple[Tensor, ...] = tuple(
            cast(Tensor, u.baseline) for u in self.game.units
        )
        self.n = self.game.n_units
        self.log(
            f"{s.title}: {self.n} units, {s.x_est.shape[0]} estimation and "
            f"{s.x_test.shape[0]} test examples, k = {s.k}, K = {s.K}"
        )

    def _shapley(self) -> None:
        s, opts = self.s, self.opts
        budget = opts.head_max_evaluations if s.heads else opts.mlp_max_evaluations
        kw: Dict[str, Any] = dict(self.kw, top_k=s.k, max_evaluations=budget)
        scen = Scenario(
            s.key, s.title, s.metric, s.x_est, s.y_est, [], s.x_test, s.y_test
        )
        self.runs: List[ShapleyRun] = run_shapley(
            self.obj, scen, list(range(opts.seeds)), kw
        )
        for r in self.runs:
            self.log(
                f"  Shapley seed {r.seed}: {r.result.n_permutations} chains, "
                f"{r.result.n_evaluations} evaluations, {r.result.stop_reason}, "
                f"{r.cost.wall_s:.1f} s"
            )
        self.status["shapley"] = shapley_status(self.runs)
        self.orders["shapley"] = [
            ranking(r.result.flat_values).tolist() for r in self.runs
        ]
        self.scores["shapley"] = self.runs[0].result.flat_values.double()
        sh = [r.cost for r in self.runs]
        self.costs["shapley"] = CostSummary(
            wall_s=round(_median([c.wall_s for c in sh]), 3),
            forward_calls=_median([c.forward_calls for c in sh]),
            forward_examples=_median([c.forward_examples for c in sh]),
            backward_calls=_median([c.backward_calls for c in sh]),
            backward_examples=_median([c.backward_examples for c in sh]),
            model_evaluations=_median([r.result.n_evaluations for r in self.runs]),
            aggregate=f"median of {plural(len(self.runs), 'seed')}",
        )

    def _greedy(self) -> None:
        r"""Each seed's removal set (``refine="greedy"``'s search over the
        default pool, continued to ``K``), and the full greedy search."""
        s, n = self.s, self.n
        pool = default_pool_size(s.k, n)
        self.refined: List[GreedySearch] = []
        for r in self.runs:
            order = torch.argsort(r.result.flat_values, descending=True).tolist()
            self.refined.append(greedy_sets(self.game, order, s.k, s.K, pool))
        self.orders["shapley-greedy"] = [g.order for g in self.refined]
        st = shapley_status(self.runs)
        st.budget = f"pool {pool}; Shapley runs: {st.budget}"
        ev = _median([g.evaluations for g in self.refined])
        cont = _median([g.continuation_evaluations for g in self.refined])
        to = min(g.continued_to for g in self.refined)
        st.used = (
            f"+{ev:.0f} evaluations for k <= {s.k}, +{cont:.0f} to continue to "
            f"k = {to} (medians); Shapley: {st.used}"
        )
        self.status["shapley-greedy"] = st
        sh = self.costs["shapley"]
        g = self.refined
        self.costs["shapley-greedy"] = CostSummary(
            wall_s=round(sh.wall_s + _median([x.wall_s for x in g]), 3),
            forward_calls=sh.forward_calls + _median([x.forward_calls for x in g]),
            forward_examples=sh.forward_examples
            + _median([x.forward_examples for x in g]),
            backward_calls=sh.backward_calls,
            backward_examples=sh.backward_examples,
            model_evaluations=sh.model_evaluations + ev,
            aggregate=f"median of {plural(len(self.runs), 'seed')}; Shapley run + "
            f"greedy search for k <= {s.k}",
            continuation_evaluations=cont,
            continuation_wall_s=round(_median([x.continuation_wall_s for x in g]), 3),
        )
        with count_cost(s.forward) as c:
            full = greedy_sets(self.game, list(range(n)), s.K, s.K, n)
        c.model_evaluations = full.evaluations
        self.costs["full-greedy"] = CostSummary.of(c)
        self.orders["full-greedy"] = [full.order]
        self.status["full-greedy"] = MethodStatus(
            f"K = {s.K} steps over all {n} units",
            f"{full.evaluations} evaluations",
        )
        self.log(
            f"  greedy: pool {pool}, +{ev:.0f} evaluations; full greedy "
            f"{full.evaluations} evaluations, {c.wall_s:.1f} s"
        )

    def _exact(self) -> None:
        r"""Exact Shapley values when the game is small (the heads)."""
        if self.n > 12:
            return
        with count_cost(self.s.forward) as c:
            before = self.game.n_evaluations
            self.exact = exact_values(self.game)
            c.model_evaluations = self.game.n_evaluations - before
        self.costs["exact-shapley"] = CostSummary.of(c)
        self.orders["exact-shapley"] = [ranking(self.exact).tolist()]
        self.scores["exact-shapley"] = self.exact
        self.status["exact-shapley"] = MethodStatus(
            f"all {1 << self.n} coalitions", f"{c.model_evaluations} evaluations"
        )

    def _baselines(self) -> None:
        s, opts = self.s, self.opts
        n_est = int(s.x_est.shape[0])
        runners: Dict[str, Callable[[], torch.Tensor]] = {
            "michel": lambda: self._with_sites(
                lambda sites: T.gate_importance(s.forward, sites, s.x_est, s.y_est)
            ),
            "atp": lambda: self._with_sites(
                lambda sites: T.attribution_patching(
                    s.forward, sites, s.x_est, s.y_est, list(self.base)
                )
            ),
            "conductance": lambda: self._with_sites(
                lambda sites: T.unit_conductance(
                    s.forward,
                    sites,
                    s.x_est,
                    s.y_est,
                    s.input_baseline,
                    n_steps=opts.n_steps,
                )
            ),
            "grad-x-act": lambda: self._with_sites(
                lambda sites: T.unit_grad_x_act(s.forward, sites, s.x_est, s.y_est)
            ),
        }
        budgets = {
            "michel": f"all {n_est} examples",
            "atp": f"all {n_est} examples",
            "conductance": f"all {n_est} examples, {opts.n_steps} steps",
            "grad-x-act": f"all {n_est} examples",
        }
        for name, fn in runners.items():
            with count_cost(s.forward) as c:
                self.scores[name] = fn()
            self._baseline_done(name, c, budgets[name], f"{n_est} examples")
        with count_cost(s.forward) as c:
            before = self.game.n_evaluations
            self.scores["leave-one-out"] = B.leave_one_out(self.game)
            c.model_evaluations = self.game.n_evaluations - before
        self._baseline_done(
            "leave-one-out",
            c,
            f"{self.n} evaluations",
            f"{c.model_evaluations}" " evaluations",
        )
        self.log(
            "  baselines: "
            + ", ".join(
                f"{m} {self.costs[m].wall_s:.2f} s"
                for m in ("michel", "atp", "conductance", "grad-x-act", "leave-one-out")
            )
        )

    def _with_sites(self, fn: Callable[[List[T.Site]], torch.Tensor]) -> torch.Tensor:
        with self.s.sites() as sites:
            return fn(sites)

    def _baseline_done(self, name: str, c: Cost, budget: str, used: str) -> None:
        self.costs[name] = CostSummary.of(c)
        self.orders[name] = [ranking(self.scores[name]).tolist()]
        self.status[name] = MethodStatus(budget, used)

    def _random(self) -> None:
        g = torch.Generator().manual_seed(RANDOM_ORDER_SEED)
        self.orders["random"] = [
            torch.randperm(self.n, generator=g).tolist()
            for _ in range(self.opts.random_seeds)
        ]
        self.costs["random"] = CostSummary.of(Cost())
        self.status["random"] = MethodStatus(
            f"{self.opts.random_seeds} random orders", ""
        )

    def _curves(self) -> Dict[str, Curve]:
        s = self.s
        kw = dict(self.kw)
        kw["layer_baselines"] = self.base
        test = self.obj.game(s.x_test, target=s.y_test, metric=s.metric, **kw)
        self.ks = list(range(0, s.K + 1))
        flat = {
            f"{m}#{i}": o[: s.K]
            for m, os_ in self.orders.items()
            for i, o in enumerate(os_)
        }
        values = prefix_curves(test, flat, self.ks)
        self.intact = values[next(iter(values))][0]
        return {
            m: self._curve(m, [values[f"{m}#{i}"] for i in range(len(os_))])
            for m, os_ in self.orders.items()
        }

    def _curve(self, method: str, runs: List[List[float]]) -> Curve:
        return Curve.of_runs(runs, list(self.ks), random=method == "random")

    # -- the summary ---------------------------------------------------------------

    def _mechanism(self) -> Optional[MechanismRanks]:
        s = self.s
        if not s.mechanism:
            return None
        units = list(s.mechanism)
        ranks: Dict[str, List[float]] = {}
        found: Dict[str, float] = {}
        for m, os_ in self.orders.items():
            if m == "random":
                continue
            per_order = []
            for o in os_:
                rest = [u for u in range(self.n) if u not in set(o)]
                full = list(o) + rest
                per_order.append([float(full.index(u) + 1) for u in units])
            ranks[m] = [_median([r[i] for r in per_order]) for i in range(len(units))]
            hits = [set(o[: len(units)]) == set(units) for o in os_]
            found[m] = sum(hits) / len(hits)
        return MechanismRanks(
            units=units,
            names=[s.unit_names[u] for u in units],
            roles=list(s.mechanism_roles or []),
            ranks=ranks,
            found=found,
        )

    def _run_info(self, i: int, r: ShapleyRun) -> ShapleyRunInfo:
        g = self.refined[i]
        return ShapleyRunInfo(
            seed=r.seed,
            evaluations=r.result.n_evaluations,
            permutations=r.result.n_permutations,
            converged=r.result.converged,
            stop_reason=r.result.stop_reason,
            budget=r.budget,
            wall_s=round(r.cost.wall_s, 2),
            boundary_crowding=r.result.boundary_crowding(),
            epsilon=r.result.epsilon,
            refine=RefineInfo(
                g.evaluations,
                g.continuation_evaluations,
                g.pool,
                g.continued_to,
                round(g.wall_s, 3),
            ),
        )

    def _summary(self, curves: Dict[str, Curve], wall: float) -> StudySummary:
        s = self.s
        winners = per_k_winners(
            {m: curves[m].curve[1:] for m in COMPETING if m in curves}, self.ks[1:]
        )
        n_test = int(s.x_test.shape[0])
        answers = 1
        if isinstance(s.metric, TaskAccuracy):
            answers = int(s.y_test.shape[1])
        fraction = isinstance(s.metric, (Accuracy, TaskAccuracy))
        return StudySummary(
            key=s.key,
            title=s.title,
            model=s.model_name,
            units=s.units,
            question=s.question,
            metric=s.metric_name,
            n_units=self.n,
            unit_names=list(s.unit_names),
            n_est=int(s.x_est.shape[0]),
            n_test=n_test,
            k=s.k,
            K=s.K,
            ks=self.ks,
            intact=self.intact,
            resolution=1.0 / (n_test * answers) if fraction else 0.0,
            methods=curves,
            winners=[KWinners(w["k"], w["value"], w["winners"]) for w in winners],
            costs=self.costs,
            status=self.status,
            shapley_runs=[self._run_info(i, r) for i, r in enumerate(self.runs)],
            scores={m: v.double().tolist() for m, v in self.scores.items()},
            orders={
                m: os_[0][: s.K] for m, os_ in self.orders.items() if m != "random"
            },
            shapley_lower=_bound(self.runs[0], -1.0),
            shapley_upper=_bound(self.runs[0], 1.0),
            exact=None if self.exact is None else self.exact.double().tolist(),
            roles=s.roles,
            mechanism=self._mechanism(),
            all_mlp_removed=dict(s.all_mlp_removed),
            wall_s=round(wall, 1),
        )


def run_study(study: Study, opts: TransformerOptions, log: Log = print) -> StudySummary:
    r"""Every method on one study; see the module's docstring.

    Args:
        study (Study): The model, units, metric and splits.
        opts (TransformerOptions): Settings.
        log (Callable): Progress messages.

    Returns:
        StudySummary: The study's numbers.
    """
    return _StudyRun(study, opts, log).run()


def run_transformers(opts: TransformerOptions) -> TransformerSummary:
    r"""Run every study of ``opts`` (all by default), write
    ``report.md``, ``results.json`` and the figures into
    ``opts.out``, and return the summary.

    Args:
        opts (TransformerOptions): Settings.

    Returns:
        TransformerSummary: What ``results.json`` holds.
    """
    t0 = time.perf_counter()
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:5.0f}s] {msg}", flush=True)

    keys = opts.studies or [study_key(*s) for s in STUDIES]
    studies = {}
    for key in keys:
        studies[key] = run_study(build_study(key, opts), opts, log)
    summary = TransformerSummary(
        command=opts.command,
        environment=Environment.capture("cpu"),
        quick=opts.quick,
        seeds=opts.seeds,
        random_seeds=opts.random_seeds,
        n_steps=opts.n_steps,
        studies=studies,
    )
    log("figures")
    summary.figures = draw_all(summary, out)
    summary.total_wall_s = round(time.perf_counter() - t0, 1)
    write_files(summary, out)
    return summary


def write_files(summary: TransformerSummary, out: Path) -> None:
    r"""``results.json`` and ``report.md`` into ``out``."""
    (out / "results.json").write_text(json.dumps(summary.to_dict(), indent=1))
    (out / "report.md").write_text(render(summary))


def render_saved(path: Path, out: Optional[Path] = None) -> TransformerSummary:
    r"""Read a saved ``results.json``, redraw its figures and rewrite
    ``report.md`` and ``results.json`` in ``out`` (default: beside it)."""
    path = Path(path)
    summary = TransformerSummary.from_dict(json.loads(path.read_text()))
    out = path.parent if out is None else Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary.figures = draw_all(summary, out)
    write_files(summary, out)
    return summary
