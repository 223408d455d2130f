r"""One question of the report, stage by stage (:class:`QuestionRun`): the
Shapley runs (one per seed), their greedy removal sets, the full greedy search
(when affordable), the baselines, the removal curves of every ranking on the
held-out test split, and the costs; the result is a
:class:`~comparisons.report.summary.QuestionSummary` plus what later questions
and the figures need (:class:`QuestionOutcome`).

Under a time budget each stage gets its share of the question's time
(:data:`~comparisons.report.options.STAGES`); a stage whose estimated cost does
not fit is skipped or cut short, and its status says so.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from captum_neuron_shapley import FilterShapley
from captum_neuron_shapley.metrics import Accuracy, ClassRecall
from captum_neuron_shapley.refine import default_pool_size

from ..budget import affordable_pool, greedy_evaluations, thin_ks, TimePlan
from ..cost import Cost, count_cost
from ..methods import COMPETING, MethodStatus
from ..methods.greedy import greedy_sets, GreedySearch
from ..methods.scoring import score_baselines
from ..methods.shapley import (
    run_shapley,
    seconds_per_evaluation,
    shapley_status,
    ShapleyRun,
)
from ..protocol import agreement, PairAccuracy, per_k_winners, prefix_curves, ranking
from ..scenario import Scenario
from ..text import plural
from .options import Options, shapley_kwargs, STAGES
from .setup import Setup
from .summary import (
    Agreement,
    CostSummary,
    Curve,
    KWinners,
    QuestionSummary,
    RefineInfo,
    ShapleyRunInfo,
)

__all__ = ["Context", "QuestionRun", "QuestionOutcome"]

#: Metrics whose value is a fraction of test examples (one example is their step).
FRACTIONS = (Accuracy, ClassRecall, PairAccuracy)

#: Seed of the random removal orders.
RANDOM_ORDER_SEED = 1234


class Context:
    r"""What every question of one report shares: the setup, the options, the
    log, the attribution object and the time plan."""

    def __init__(self, setup: Setup, opts: Options, log: Callable[[str], None]):
        self.setup, self.opts, self.log = setup, opts, log
        self.model = setup.model
        self.fs = FilterShapley(setup.model, setup.layers)
        self.plan = TimePlan(opts.time_budget)
        self.progress = sys.stderr.isatty()


@dataclass
class QuestionOutcome:
    r"""A question's summary, and the tensors later questions and the figures
    need (not written to ``results.json``)."""

    summary: QuestionSummary
    runs: List[ShapleyRun]
    scores: Dict[str, torch.Tensor]
    base: Tuple[Any, ...]
    orders: Dict[str, List[List[int]]]


def _median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


@dataclass
class QuestionRun:
    r"""Score, search and judge every method on one question.

    Args:
        ctx (Context): What the questions share.
        scen (Scenario): The question.
        fraction (float): Its share of the time left.
        main (bool): The overall question (the larger Shapley budget).
        baselines (tuple, optional): Removal baselines (None: the game's own).
        exclude (dict, optional): ``{method: units}`` each may not remove
            (``"shapley"``: the exclusion of random removal and the searches).
        shapley_exclude (list, optional): Per Shapley seed, its exclusion.
    """

    ctx: Context
    scen: Scenario
    fraction: float
    main: bool
    baselines: Optional[Tuple[Any, ...]] = None
    exclude: Dict[str, List[int]] = field(default_factory=dict)
    shapley_exclude: Optional[List[List[int]]] = None

    def run(self) -> QuestionOutcome:
        self.t0 = time.perf_counter()
        self.plan = self.ctx.plan.question(self.fraction, STAGES)
        self.orders: Dict[str, List[List[int]]] = {}
        self.scores: Dict[str, torch.Tensor] = {}
        self.statuses: Dict[str, MethodStatus] = {}
        self.costs: Dict[str, CostSummary] = {}
        self._validation_game()
        self._shapley()
        self._refine()
        self._full_greedy()
        self._baselines()
        self._random()
        curves = self._curves()
        self._costs()
        return QuestionOutcome(
            self._summary(curves), self.runs, self.scores, self.base, self.orders
        )

    # -- helpers -----------------------------------------------------------------

    def _seconds(self, stage: str) -> Optional[float]:
        return (
            self.plan.seconds_for(stage)
            if self.ctx.opts.time_budget is not None
            else None
        )

    # -- stages ------------------------------------------------------------------

    def _validation_game(self) -> None:
        ctx, scen = self.ctx, self.scen
        with count_cost(ctx.model) as self.c_game:
            self.game = ctx.fs.game(
                scen.val_inputs,
                target=scen.val_target,
                metric=scen.metric,
                layer_baselines=self.baselines,
                perturbations_per_eval=ctx.opts.perturbations_per_eval,
            )
            self.t_eval = seconds_per_evaluation(self.game)
        self.n = self.game.n_units
        self.base = tuple(u.baseline for u in self.game.units)
        self.excl_shared = self.exclude.get("shapley", [])
        self.n_avail = self.n - len(self.excl_shared)
        self.k = min(ctx.opts.top_k, self.n_avail - 1)
        self.K = min(ctx.opts.max_k or 2 * ctx.opts.top_k, self.n_avail)
        ctx.log(
            f"{scen.title}: {self.n} units, {scen.val_inputs.shape[0]} validation "
            f"examples, {self.t_eval * 1000:.0f} ms per coalition"
            + (
                ""
                if self.plan.total_s is None
                else f"; {self.plan.total_s:.0f} s for this question"
            )
        )

    def _shapley(self) -> None:
        ctx, opts = self.ctx, self.ctx.opts
        kw = shapley_kwargs(opts, self.n, self.scen.val_inputs.shape[0], self.main)
        kw.update(
            top_k=self.k, layer_baselines=self.baselines, show_progress=ctx.progress
        )
        self.runs = run_shapley(
            ctx.fs, self.scen, list(range(opts.seeds)), kw, self._seconds("shapley")
        )
        for r in self.runs:
            ctx.log(
                f"  Shapley seed {r.seed}: {r.result.n_permutations} chains, "
                f"{r.result.n_evaluations} evaluations, {r.result.stop_reason}, "
                f"{r.cost.wall_s:.1f} s"
            )
        self.statuses["shapley"] = st = shapley_status(self.runs)
        excl = self.shapley_exclude or [self.excl_shared] * len(self.runs)
        # a run that completed no chain has no estimate to rank by (all values 0)
        self.ranked = [
            (r, ex) for r, ex in zip(self.runs, excl) if r.result.n_permutations > 0
        ]
        if not self.ranked:
            st.skipped = True
            st.reason = (
                f"completed no permutation chain within its budget ({st.budget}), "
                "so there is no estimate to rank the units by: " + st.reason
            )
            return
        self.orders["shapley"] = [
            ranking(r.result.flat_values, ex).tolist() for r, ex in self.ranked
        ]
        self.scores["shapley"] = self.ranked[0][0].result.flat_values.double()
        if len(self.ranked) < len(self.runs):
            st.reason += (
                f"; {len(self.runs) - len(self.ranked)} of {len(self.runs)} seeds "
                "completed no chain and are left out of the curves"
            )

    def _refine(self) -> None:
        r"""Each seed's greedy removal set (``refine="greedy"``), continued to
        ``K`` over the same pool."""
        opts, k = self.ctx.opts, self.k
        pool = opts.refine_pool or default_pool_size(k, self.n_avail)
        pool = max(min(pool, self.n_avail), k)
        sec = self._seconds("refine")
        per_seed = None if sec is None else sec / max(1, len(self.ranked))
        pool_run = affordable_pool(k, pool, self.t_eval, per_seed)
        self.refined: List[GreedySearch] = []
        if not self.ranked:
            self.statuses["shapley-greedy"] = MethodStatus(
                f"pool {pool}",
                "",
                complete=False,
                skipped=True,
                reason="no Shapley estimate to pick the pool from (no chain completed)",
            )
            self.ctx.log("  greedy refinement skipped: no Shapley estimate")
            return
        if pool_run is None:
            assert sec is not None
            small = min(2 * k, pool)
            need = greedy_evaluations(k, small)
            self.ctx.log(f"  greedy refinement skipped: does not fit its {sec:.1f} s")
            self.statuses["shapley-greedy"] = MethodStatus(
                f"{sec:.1f} s",
                "",
                complete=False,
                skipped=True,
                reason=f"a greedy search over a pool of {small} needs {need} "
                f"evaluations, about {need * self.t_eval:.0f} s per seed; its share "
                f"of the time was {sec:.1f} s",
            )
            return
        for r, ex in self.ranked:
            # the order refine="greedy" uses, without the excluded units
            order = torch.argsort(r.result.flat_values, descending=True).tolist()
            drop = set(ex)
            order = [u for u in order if u not in drop]
            left = None if sec is None else max(0.0, sec / len(self.ranked))
            self.refined.append(
                greedy_sets(self.game, order, k, self.K, pool_run, left, self.t_eval)
            )
        self.orders["shapley-greedy"] = [g.order for g in self.refined]
        self.statuses["shapley-greedy"] = self._refine_status(pool, pool_run)

    def _refine_status(self, pool: int, pool_run: int) -> MethodStatus:
        st = shapley_status([r for r, _ in self.ranked])
        ev = _median([g.evaluations for g in self.refined])
        cont = _median([g.continuation_evaluations for g in self.refined])
        to = min(g.continued_to for g in self.refined)
        st.budget = (
            f"pool {pool_run} (default {pool}); Shapley runs: {st.budget}"
            if pool_run != pool
            else f"pool {pool_run}; Shapley runs: {st.budget}"
        )
        st.used = (
            f"+{ev:.0f} evaluations for k <= {self.k} (median), "
            f"+{cont:.0f} to continue to k = {to}; Shapley: {st.used}"
        )
        if to < self.K:
            st.add_reason(f"not continued beyond k = {to} (time)")
            st.complete = False
        self.ctx.log(
            f"  greedy refinement (pool {pool_run}): +{ev:.0f} evaluations, "
            f"continued to k = {to} with +{cont:.0f}"
        )
        return st

    def _full_greedy(self) -> None:
        r"""The greedy search over every unit (the reference), when affordable."""
        opts, K = self.ctx.opts, self.K
        sec = self._seconds("full-greedy")
        need = greedy_evaluations(K, self.n_avail)
        self.rule = (
            f"runs when K n - K (K - 1) / 2 = {need} evaluations <= "
            f"{opts.full_greedy_max_evaluations}"
            + ("" if sec is None else f" and fit its {sec:.1f} s")
        )
        self.full: Optional[GreedySearch] = None
        if need > opts.full_greedy_max_evaluations or (
            sec is not None and need * self.t_eval > sec
        ):
            self.statuses["full-greedy"] = st = MethodStatus(
                self.rule,
                "",
                complete=False,
                skipped=True,
                reason=f"needs {need} evaluations, about {need * self.t_eval:.0f} s",
            )
            self.ctx.log(f"  full greedy skipped: {st.reason}")
            return
        drop = set(self.excl_shared)
        order = [u for u in range(self.n) if u not in drop]
        with count_cost(self.ctx.model) as c_full:
            self.full = greedy_sets(self.game, order, K, K, self.n_avail)
        c_full.model_evaluations = self.full.evaluations
        self.costs["full-greedy"] = CostSummary.of(c_full)
        self.orders["full-greedy"] = [self.full.order]
        self.statuses["full-greedy"] = MethodStatus(
            f"{need} evaluations ({self.rule})", f"{self.full.evaluations} evaluations"
        )
        self.ctx.log(
            f"  full greedy: {self.full.evaluations} evaluations, {c_full.wall_s:.1f} s"
        )

    def _baselines(self) -> None:
        ctx = self.ctx
        scores, self.b_costs, status = score_baselines(
            ctx.model,
            ctx.setup.layers,
            self.scen,
            self.game,
            n_steps=ctx.opts.n_steps,
            seconds=(
                self.plan.seconds_for if ctx.opts.time_budget is not None else None
            ),
            seconds_per_eval=self.t_eval,
        )
        self.statuses.update(status)
        self.scores.update(scores)
        for m, s in scores.items():
            self.orders[m] = [
                ranking(s, self.exclude.get(m, self.excl_shared)).tolist()
            ]
        ctx.log(
            "  baselines: "
            + ", ".join(f"{m} {c.wall_s:.1f} s" for m, c in self.b_costs.items())
            + "".join(f"; {m} skipped" for m, s in status.items() if s.skipped)
        )

    def _random(self) -> None:
        opts = self.ctx.opts
        left = ranking(torch.zeros(self.n), self.excl_shared)
        g = torch.Generator().manual_seed(RANDOM_ORDER_SEED)
        self.orders["random"] = [
            left[torch.randperm(len(left), generator=g)].tolist()
            for _ in range(opts.random_seeds)
        ]
        self.statuses["random"] = MethodStatus(f"{opts.random_seeds} random orders", "")

    def _test_examples(self, sec: Optional[float], n_orders: int) -> int:
        r"""How many test examples the curves can afford under ``sec``."""
        scen = self.scen
        n_test = int(scen.test_inputs.shape[0])
        if sec is None:
            return n_test
        # per coalition, from the validation game's cost per example
        est = self.t_eval * n_test / max(1, int(scen.val_inputs.shape[0]))
        need = len(thin_ks(self.k, self.K, n_orders, est, 0.0)) * n_orders * est
        if need > sec:  # even the thinnest grid does not fit: fewer examples
            return min(n_test, max(16, int(n_test * sec / need)))
        return n_test

    def _curves(self) -> Dict[str, Curve]:
        r"""Every ordering's removal curve on the test split."""
        ctx, scen = self.ctx, self.scen
        n_orders = sum(len(v) for v in self.orders.values())
        sec = self._seconds("curves")
        self.n_judge = self._test_examples(sec, n_orders)
        with count_cost(ctx.model) as self.c_test:
            test_game = ctx.fs.game(
                scen.test_inputs[: self.n_judge],
                target=scen.test_target[: self.n_judge],
                metric=scen.metric,
                layer_baselines=self.base,
                perturbations_per_eval=ctx.opts.perturbations_per_eval,
            )
            self.t_test = seconds_per_evaluation(test_game)
        left_s = None if sec is None else max(0.0, sec - self.c_test.wall_s)
        self.ks = [0] + thin_ks(self.k, self.K, n_orders, self.t_test, left_s)
        flat = {
            f"{m}#{i}": o for m, os_ in self.orders.items() for i, o in enumerate(os_)
        }
        values = prefix_curves(test_game, flat, self.ks)
        self.intact = values[next(iter(values))][0]
        return {
            m: self._curve(m, [values[f"{m}#{i}"] for i in range(len(os_))])
            for m, os_ in self.orders.items()
        }

    def _curve(self, method: str, runs: List[List[float]]) -> Curve:
        return Curve.of_runs(runs, list(self.ks), random=method == "random")

    def _costs(self) -> None:
        runs = self.runs
        sh = [CostSummary.of(r.cost) for r in runs]
        shapley = CostSummary(
            wall_s=_median([c.wall_s for c in sh]),
            forward_calls=_median([c.forward_calls for c in sh]),
            forward_examples=_median([c.forward_examples for c in sh]),
            backward_calls=_median([c.backward_calls for c in sh]),
            backward_examples=_median([c.backward_examples for c in sh]),
            model_evaluations=_median([r.result.n_evaluations for r in runs]),
            aggregate=f"median of {plural(len(runs), 'seed')}",
        )
        costs: Dict[str, CostSummary] = {"shapley": shapley}
        if self.refined:
            costs["shapley-greedy"] = self._refine_cost(shapley)
        if "full-greedy" in self.costs:
            costs["full-greedy"] = self.costs["full-greedy"]
        for m, c in self.b_costs.items():
            costs[m] = CostSummary.of(c)
        costs["random"] = CostSummary.of(Cost())
        self.costs = costs

    def _refine_cost(self, shapley: CostSummary) -> CostSummary:
        g = self.refined
        return CostSummary(
            wall_s=round(shapley.wall_s + _median([x.wall_s for x in g]), 3),
            forward_calls=shapley.forward_calls + _median([x.forward_calls for x in g]),
            forward_examples=shapley.forward_examples
            + _median([x.forward_examples for x in g]),
            backward_calls=shapley.backward_calls,
            backward_examples=shapley.backward_examples,
            model_evaluations=shapley.model_evaluations
            + _median([x.evaluations for x in g]),
            aggregate=f"median of {plural(len(self.runs), 'seed')}; Shapley run + "
            f"greedy search for k <= {self.k}",
            continuation_evaluations=_median([x.continuation_evaluations for x in g]),
            continuation_wall_s=round(_median([x.continuation_wall_s for x in g]), 3),
        )

    # -- the summary ---------------------------------------------------------------

    def _run_info(self, i: int, r: ShapleyRun) -> ShapleyRunInfo:
        refine = None
        if self.refined:
            g = self.refined[i]
            refine = RefineInfo(
                g.evaluations,
                g.continuation_evaluations,
                g.pool,
                g.continued_to,
                g.wall_s,
            )
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
            refine=refine,
        )

    def _summary(self, curves: Dict[str, Curve]) -> QuestionSummary:
        scen, res0 = self.scen, self.runs[0].result
        winners = per_k_winners(
            {m: curves[m].curve[1:] for m in COMPETING if m in curves}, self.ks[1:]
        )
        ag = agreement(self.scores, self.k)
        return QuestionSummary(
            key=scen.name,
            title=scen.title,
            metric="",
            n_val=int(scen.val_inputs.shape[0]),
            n_test=self.n_judge,
            n_test_available=int(scen.test_inputs.shape[0]),
            k=self.k,
            K=self.K,
            ks=self.ks,
            intact=self.intact,
            excluded=len(self.excl_shared),
            resolution=(
                1.0 / self.n_judge if isinstance(scen.metric, FRACTIONS) else 0.0
            ),
            methods=curves,
            winners=[KWinners(w["k"], w["value"], w["winners"]) for w in winners],
            costs=self.costs,
            status=self.statuses,
            agreement=Agreement(ag["methods"], ag["k"], ag["overlap"], ag["spearman"]),
            top_units={
                m: [list(res0.unit(int(u))) for u in os_[0][: self.k]]
                for m, os_ in self.orders.items()
                if m != "random"
            },
            shapley_runs=[self._run_info(i, r) for i, r in enumerate(self.runs)],
            full_greedy_rule=self.rule,
            seconds_per_evaluation={"validation": self.t_eval, "test": self.t_test},
            setup_cost={
                "validation_game": CostSummary.of(self.c_game),
                "test_game": CostSummary.of(self.c_test),
            },
            time_s=None if self.plan.total_s is None else round(self.plan.total_s, 1),
            wall_s=round(time.perf_counter() - self.t0, 1),
        )
