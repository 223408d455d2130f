r"""The one-command report: which method, for which question, at which ``k``.

Every method ranks the same units on the validation split; each ranking is
judged on the held-out test split by its removal curve, the metric after
removing its first ``k`` units for every ``k = 1..K`` (``K = 2 x`` the headline
``k`` by default). Three questions: the overall metric; one class's recall with
each method's global top 20% excluded; class A versus class B. Methods:

- ``shapley``: Shapley values (the top-``k`` bandit), ranked by value; median
  curve over the seeds.
- ``shapley-greedy``: the same runs' removal sets (``refine="greedy"``: greedy
  search on the same game over the ``refine_pool`` highest-valued units) for
  ``k`` up to ``top_k``, then the same search continued over the same pool up to
  ``K``; median over the seeds.
- ``full-greedy``: the greedy search over every unit, on the same game: what a
  greedy removal set can reach at most, run when it is affordable (see
  :func:`comparisons.budget.greedy_evaluations`).
- conductance, gradient x activation, distributional influence (point mass and
  path), leave-one-out, activation magnitude, and random removal (mean +- std
  over seeds).

Per ``k`` it names the winner (lowest metric; ties shown), with every method's
cost and budget beside, and marks every method that stopped on a budget.
Writes ``report.md``, ``results.json`` and PNG figures.
"""

from __future__ import annotations

import json
import math
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from captum_neuron_shapley import FilterShapley
from captum_neuron_shapley.metrics import Accuracy, ClassRecall, NegativeCrossEntropy
from captum_neuron_shapley.refine import default_pool_size

from . import figures
from .baselines import neuron_conductance_map
from .budget import (
    affordable_pool,
    greedy_evaluations,
    shapley_budget,
    Stage,
    thin_ks,
    TimePlan,
)
from .cost import count_cost
from .markdown import render
from .protocol import (
    agreement,
    area_under_curve,
    PairAccuracy,
    per_k_winners,
    prefix_curves,
    ranking,
    spread,
    top_fraction,
)
from .scenarios import (
    greedy_sets,
    METHODS,
    MethodStatus,
    QuantityPart,
    run_shapley,
    Scenario,
    score_baselines,
    seconds_per_evaluation,
    shapley_status,
    ShapleyRun,
)
from .setup import Setup

__all__ = ["Options", "run_report", "QUICK_TIME_BUDGET"]

#: Seconds ``--quick`` gives the methods of all three questions together (data
#: and model loading, figures and files come on top).
QUICK_TIME_BUDGET = 130.0

#: Relative shares of a question's time under a time budget, in the order the
#: stages run (time a stage leaves unused goes to the later ones).
STAGES = (
    Stage("shapley", 4.0),
    Stage("refine", 1.5),
    Stage("full-greedy", 1.0),
    Stage("leave-one-out", 1.0),
    Stage("influence", 0.4),
    Stage("influence-path", 1.0),
    Stage("conductance", 1.0),
    Stage("grad-x-act", 0.4),
    Stage("activation", 0.2),
    Stage("curves", 2.5),
)

#: Methods that compete for the per-k winners (the full greedy search is the
#: reference they are measured against, shown beside them).
COMPETING = tuple(m for m in METHODS if m != "full-greedy")


@dataclass
class Options:
    r"""Settings of :func:`run_report` (the command-line flags).

    Attributes:
        out (Path): Output folder.
        quick (bool): Small budgets and a time limit (``time_budget``).
        seeds (int): Shapley seeds per question.
        top_k (int): The bandit's ``k`` and the removal set's size.
        max_k (int, optional): Curves run to this ``K`` (default ``2 * top_k``).
        time_budget (float, optional): Seconds for the methods of all questions
            (default: :data:`QUICK_TIME_BUDGET` with ``quick``, else no limit).
        refine_pool (int, optional): Pool of the greedy refinement (default
            ``refine.default_pool_size``).
        full_greedy_max_evaluations (int): The full greedy search runs when it
            needs at most this many evaluations (and, under a time budget, fits
            its share of the time).
        perturbations_per_eval (int): Coalitions per forward pass.
        plain_tmc (bool): Also run truncated Monte Carlo with the bandit off
            for as many chains as the bandit walked (not with ``quick``).
        max_evaluations (int, optional): Each Shapley run's evaluation budget
            (default :func:`~comparisons.budget.shapley_budget`).
    """

    out: Path
    quick: bool = False
    seeds: int = 3
    top_k: int = 10
    max_k: Optional[int] = None
    metric: str = "accuracy"
    recall_class: int = 3
    pair: Tuple[int, int] = (3, 8)
    exclude_fraction: float = 0.2
    random_seeds: int = 10
    n_steps: int = 20
    command: str = "python -m comparisons"
    time_budget: Optional[float] = None
    refine_pool: Optional[int] = None
    full_greedy_max_evaluations: int = 5000
    perturbations_per_eval: int = 8
    plain_tmc: bool = True
    max_evaluations: Optional[int] = None


def _metric(name: str):
    if name == "accuracy":
        return Accuracy()
    if name == "cross-entropy":
        return NegativeCrossEntropy()
    raise ValueError(f"--metric must be 'accuracy' or 'cross-entropy', got {name!r}")


def _shapley_kwargs(
    opts: Options, n_units: int, n_examples: int, main: bool
) -> Dict[str, Any]:
    if opts.max_evaluations is not None and opts.max_evaluations < 1:
        raise ValueError(
            f"`max_evaluations` must be positive or None, got {opts.max_evaluations}"
        )
    kw: Dict[str, Any] = {
        "max_evaluations": opts.max_evaluations
        or shapley_budget(n_units, opts.quick, main),
        "perturbations_per_eval": opts.perturbations_per_eval,
    }
    if opts.quick and n_examples > 64:
        kw["subset_size"] = 64
    return kw


def _median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return float(s[n // 2]) if n % 2 else float(0.5 * (s[n // 2 - 1] + s[n // 2]))


class _Context:
    r"""What every question shares."""

    def __init__(self, setup: Setup, opts: Options, log) -> None:
        self.setup, self.opts, self.log = setup, opts, log
        self.model = setup.model
        self.fs = FilterShapley(setup.model, setup.layers)
        self.plan = TimePlan(opts.time_budget)
        self.progress = sys.stderr.isatty()


def _question(
    ctx: _Context,
    scen: Scenario,
    fraction: float,
    main: bool,
    baselines: Optional[Tuple[torch.Tensor, ...]],
    exclude: Optional[Dict[str, List[int]]] = None,
    shapley_exclude: Optional[List[List[int]]] = None,
) -> Dict[str, Any]:
    r"""Score, search and judge every method on one question."""
    opts, fs, log = ctx.opts, ctx.fs, ctx.log
    qp = ctx.plan.question(fraction, STAGES)
    quick_limit = opts.time_budget is not None
    ppe = opts.perturbations_per_eval
    t_q = time.perf_counter()

    with count_cost(ctx.model) as c_game:
        game = fs.game(
            scen.val_inputs,
            target=scen.val_target,
            metric=scen.metric,
            layer_baselines=baselines,
            perturbations_per_eval=ppe,
        )
        t_eval = seconds_per_evaluation(game)
    n = game.n_units
    base = tuple(u.baseline for u in game.units)
    exclude = dict(exclude or {})
    excl_shared = exclude.get("shapley", [])
    n_avail = n - len(excl_shared)
    k = min(opts.top_k, n_avail - 1)
    K = min(opts.max_k or 2 * opts.top_k, n_avail)
    log(
        f"{scen.title}: {n} units, {scen.val_inputs.shape[0]} validation examples, "
        f"{t_eval * 1000:.0f} ms per coalition"
        + ("" if qp.total_s is None else f"; {qp.total_s:.0f} s for this question")
    )

    # -- Shapley, one run per seed -------------------------------------------------
    kw = _shapley_kwargs(opts, n, scen.val_inputs.shape[0], main)
    kw.update(top_k=k, layer_baselines=baselines, show_progress=ctx.progress)
    seeds = list(range(opts.seeds))
    runs: List[ShapleyRun] = run_shapley(
        fs, scen, seeds, kw, qp.seconds_for("shapley") if quick_limit else None
    )
    for r in runs:
        log(
            f"  Shapley seed {r.seed}: {r.result.n_permutations} chains, "
            f"{r.result.n_evaluations} evaluations, {r.result.stop_reason}, "
            f"{r.cost.wall_s:.1f} s"
        )
    statuses: Dict[str, MethodStatus] = {"shapley": shapley_status(runs)}
    shap_excl = shapley_exclude or [excl_shared] * len(runs)
    # a run that completed no chain has no estimate to rank by (all values 0)
    ranked = [(r, ex) for r, ex in zip(runs, shap_excl) if r.result.n_permutations > 0]
    orders: Dict[str, List[List[int]]] = {}
    scores: Dict[str, torch.Tensor] = {}
    if ranked:
        orders["shapley"] = [
            ranking(r.result.flat_values, ex).tolist() for r, ex in ranked
        ]
        scores["shapley"] = ranked[0][0].result.flat_values.double()
        if len(ranked) < len(runs):
            statuses["shapley"].reason += (
                f"; {len(runs) - len(ranked)} of {len(runs)} seeds completed no "
                "chain and are left out of the curves"
            )
    else:
        st = statuses["shapley"]
        st.skipped = True
        st.reason = (
            f"completed no permutation chain within its budget ({st.budget}), so "
            "there is no estimate to rank the units by: " + st.reason
        )

    # -- the greedy refinement of each run: refine="greedy", continued to K ----------
    pool = opts.refine_pool or default_pool_size(k, n_avail)
    pool = max(min(pool, n_avail), k)
    sec = qp.seconds_for("refine") if quick_limit else None
    pool_run = affordable_pool(
        k, pool, t_eval, None if sec is None else sec / max(1, len(ranked))
    )
    refined: List[Dict[str, Any]] = []
    if not ranked:
        statuses["shapley-greedy"] = MethodStatus(
            f"pool {pool}",
            "",
            complete=False,
            skipped=True,
            reason="no Shapley estimate to pick the pool from (no chain completed)",
        )
        log("  greedy refinement skipped: no Shapley estimate")
    elif pool_run is None:
        log(f"  greedy refinement skipped: does not fit its {sec:.1f} s")
        statuses["shapley-greedy"] = MethodStatus(
            f"{sec:.1f} s",
            "",
            complete=False,
            skipped=True,
            reason=f"a greedy search over a pool of {min(2 * k, pool)} needs "
            f"{greedy_evaluations(k, min(2 * k, pool))} evaluations, about "
            f"{greedy_evaluations(k, min(2 * k, pool)) * t_eval:.0f} s per seed; "
            f"its share of the time was {sec:.1f} s",
        )
    else:
        for r, ex in ranked:
            # the order refine="greedy" uses, without the excluded units
            order = torch.argsort(r.result.flat_values, descending=True).tolist()
            drop = set(ex)
            order = [u for u in order if u not in drop]
            left = None if sec is None else max(0.0, sec / len(ranked))
            refined.append(greedy_sets(game, order, k, K, pool_run, left, t_eval))
        orders["shapley-greedy"] = [g["order"] for g in refined]
        st = shapley_status([r for r, _ in ranked])
        ev = [g["evaluations"] for g in refined]
        cont = [g["continuation_evaluations"] for g in refined]
        to = min(g["continued_to"] for g in refined)
        st.budget = (
            f"pool {pool_run} (default {pool}); Shapley runs: {st.budget}"
            if pool_run != pool
            else f"pool {pool_run}; Shapley runs: {st.budget}"
        )
        st.used = (
            f"+{_median(ev):.0f} evaluations for k <= {k} (median), "
            f"+{_median(cont):.0f} to continue to k = {to}; Shapley: {st.used}"
        )
        if to < K:
            st.reason = (st.reason + "; " if st.reason else "") + (
                f"not continued beyond k = {to} (time)"
            )
            st.complete = False
        statuses["shapley-greedy"] = st
        log(
            f"  greedy refinement (pool {pool_run}): +{_median(ev):.0f} evaluations, "
            f"continued to k = {to} with +{_median(cont):.0f}"
        )

    # -- the full greedy search (upper bound) ------------------------------------
    sec = qp.seconds_for("full-greedy") if quick_limit else None
    need = greedy_evaluations(K, n_avail)
    full: Optional[Dict[str, Any]] = None
    rule = (
        f"runs when K n - K (K - 1) / 2 = {need} evaluations <= "
        f"{opts.full_greedy_max_evaluations}"
        + ("" if sec is None else f" and fit its {sec:.1f} s")
    )
    if need <= opts.full_greedy_max_evaluations and (
        sec is None or need * t_eval <= sec
    ):
        order = [u for u in range(n) if u not in set(excl_shared)]
        with count_cost(ctx.model) as c_full:
            full = greedy_sets(game, order, K, K, n_avail)
        c_full.model_evaluations = full["evaluations"]
        orders["full-greedy"] = [full["order"]]
        statuses["full-greedy"] = MethodStatus(
            f"{need} evaluations ({rule})", f"{full['evaluations']} evaluations"
        )
        log(f"  full greedy: {full['evaluations']} evaluations, {c_full.wall_s:.1f} s")
    else:
        statuses["full-greedy"] = MethodStatus(
            rule,
            "",
            complete=False,
            skipped=True,
            reason=f"needs {need} evaluations, about {need * t_eval:.0f} s",
        )
        log(f"  full greedy skipped: {statuses['full-greedy'].reason}")

    # -- baselines -------------------------------------------------------------------
    b_scores, b_costs, b_status = score_baselines(
        ctx.model,
        ctx.setup.layers,
        scen,
        game,
        n_steps=opts.n_steps,
        seconds=qp.seconds_for if quick_limit else None,
        seconds_per_eval=t_eval,
    )
    statuses.update(b_status)
    scores.update(b_scores)
    for m, s in b_scores.items():
        orders[m] = [ranking(s, exclude.get(m, excl_shared)).tolist()]
    log(
        "  baselines: "
        + ", ".join(f"{m} {b_costs[m].wall_s:.1f} s" for m in b_costs)
        + "".join(f"; {m} skipped" for m, s in b_status.items() if s.skipped)
    )

    # -- removal curves on the test split ------------------------------------------
    left = ranking(torch.zeros(n), excl_shared)
    g = torch.Generator().manual_seed(1234)
    orders["random"] = [
        left[torch.randperm(len(left), generator=g)].tolist()
        for _ in range(opts.random_seeds)
    ]
    n_orders = sum(len(v) for v in orders.values())
    sec = qp.seconds_for("curves") if quick_limit else None
    n_test = int(scen.test_inputs.shape[0])
    n_judge = n_test
    if sec is not None:
        # per coalition, from the validation game's cost per example
        est = t_eval * n_test / max(1, int(scen.val_inputs.shape[0]))
        need = len(thin_ks(k, K, n_orders, est, 0.0)) * n_orders * est
        if need > sec:  # even the thinnest grid does not fit: fewer examples
            n_judge = min(n_test, max(16, int(n_test * sec / need)))
    test_x, test_y = scen.test_inputs[:n_judge], scen.test_target[:n_judge]
    with count_cost(ctx.model) as c_test:
        test_game = fs.game(
            test_x,
            target=test_y,
            metric=scen.metric,
            layer_baselines=base,
            perturbations_per_eval=ppe,
        )
        t_test = seconds_per_evaluation(test_game)
    left_s = None if sec is None else max(0.0, sec - c_test.wall_s)
    ks = [0] + thin_ks(k, K, n_orders, t_test, left_s)
    flat = {f"{m}#{i}": o for m, os_ in orders.items() for i, o in enumerate(os_)}
    values = prefix_curves(test_game, flat, ks)
    intact = values[next(iter(values))][0]

    methods: Dict[str, Dict[str, Any]] = {}
    for m, os_ in orders.items():
        curves = [values[f"{m}#{i}"] for i in range(len(os_))]
        sp = spread(curves)
        agg = "mean" if m == "random" else "median"
        entry = {
            "runs": curves,
            "curve": sp[agg],
            "aggregate": (
                f"{agg} of {len(curves)}" if len(curves) > 1 else "single run"
            ),
            "min": sp["min"],
            "max": sp["max"],
            "std": sp["std"],
        }
        entry["auc"] = area_under_curve(
            [kk for kk, v in zip(ks, entry["curve"]) if v == v],
            [v for v in entry["curve"] if v == v],
        )
        methods[m] = entry
    winners = per_k_winners(
        {m: methods[m]["curve"][1:] for m in COMPETING if m in methods}, ks[1:]
    )

    # -- costs -------------------------------------------------------------------
    costs: Dict[str, Dict[str, Any]] = {}
    sh = [r.cost.as_dict() for r in runs]
    costs["shapley"] = {key: _median([c[key] for c in sh]) for key in sh[0]}
    costs["shapley"]["model_evaluations"] = _median(
        [r.result.n_evaluations for r in runs]
    )
    costs["shapley"]["aggregate"] = f"median of {len(runs)} seeds"
    if refined:
        c = dict(costs["shapley"])
        c["wall_s"] = round(c["wall_s"] + _median([g["wall_s"] for g in refined]), 3)
        for key, src in (
            ("model_evaluations", "evaluations"),
            ("forward_calls", "forward_calls"),
            ("forward_examples", "forward_examples"),
        ):
            c[key] = c[key] + _median([g[src] for g in refined])
        c["continuation_evaluations"] = _median(
            [g["continuation_evaluations"] for g in refined]
        )
        c["continuation_wall_s"] = round(
            _median([g["continuation_wall_s"] for g in refined]), 3
        )
        c["aggregate"] = (
            f"median of {len(runs)} seeds; Shapley run + greedy search for k <= {k}"
        )
        costs["shapley-greedy"] = c
    if full is not None:
        costs["full-greedy"] = c_full.as_dict()
    for m, c in b_costs.items():
        costs[m] = c.as_dict()
    costs["random"] = {
        "wall_s": 0.0,
        "forward_calls": 0,
        "forward_examples": 0,
        "backward_calls": 0,
        "backward_examples": 0,
        "model_evaluations": 0,
    }
    statuses["random"] = MethodStatus(f"{opts.random_seeds} random orders", "")

    out: Dict[str, Any] = {
        "title": scen.title,
        "n_val": int(scen.val_inputs.shape[0]),
        "n_test": n_judge,
        "n_test_available": n_test,
        "k": k,
        "K": K,
        "ks": ks,
        "intact": intact,
        "excluded": len(excl_shared),
        "methods": methods,
        "winners": winners,
        "costs": costs,
        "status": {m: s.as_dict() for m, s in statuses.items()},
        "agreement": agreement(scores, k),
        "top_units": {
            m: [list(runs[0].result.unit(int(u))) for u in os_[0][:k]]
            for m, os_ in orders.items()
            if m != "random"
        },
        "shapley_runs": [
            {
                "seed": r.seed,
                "evaluations": r.result.n_evaluations,
                "permutations": r.result.n_permutations,
                "converged": r.result.converged,
                "stop_reason": r.result.stop_reason,
                "budget": r.budget,
                "wall_s": round(r.cost.wall_s, 2),
                "boundary_crowding": r.result.boundary_crowding(),
                "epsilon": r.result.epsilon,
                "refine": (
                    None
                    if not refined
                    else {
                        key: refined[i][key]
                        for key in (
                            "evaluations",
                            "continuation_evaluations",
                            "pool",
                            "continued_to",
                            "wall_s",
                        )
                    }
                ),
            }
            for i, r in enumerate(runs)
        ],
        "full_greedy_rule": rule,
        "seconds_per_evaluation": {"validation": t_eval, "test": t_test},
        "setup_cost": {
            "validation_game": c_game.as_dict(),
            "test_game": c_test.as_dict(),
        },
        "time_s": None if qp.total_s is None else round(qp.total_s, 1),
        "wall_s": round(time.perf_counter() - t_q, 1),
    }
    # private: what later questions and the figures need
    out["_runs"], out["_scores"], out["_base"] = runs, scores, base
    out["_test_game"], out["_orders"] = test_game, orders
    return out


def run_report(setup: Setup, opts: Options) -> Dict[str, Any]:
    r"""Run every method and question on ``setup``, write ``report.md``,
    ``results.json`` and the figures into ``opts.out``, and return the summary.

    Args:
        setup (Setup): Model, layers and data.
        opts (Options): Settings.

    Returns:
        dict: What ``results.json`` holds, plus ``"headline"`` (the overall
        question's per-k winners as printed).
    """
    t0 = time.perf_counter()
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    if opts.top_k < 1 or (opts.max_k is not None and opts.max_k < opts.top_k):
        raise ValueError(
            f"need top_k >= 1 and max_k >= top_k, got {opts.top_k}, {opts.max_k}"
        )

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:5.0f}s] {msg}", flush=True)

    ctx = _Context(setup, opts, log)
    model = setup.model
    metric = _metric(opts.metric)

    # -- 1. overall metric -------------------------------------------------------
    overall = Scenario(
        "overall",
        f"overall {opts.metric}",
        metric,
        setup.x_val,
        setup.y_val,
        [QuantityPart(setup.x_val, setup.y_val)],
        setup.x_test,
        setup.y_test,
    )
    q_overall = _question(ctx, overall, 0.5, True, None)
    base = q_overall["_base"]
    runs0 = q_overall["_runs"]

    # -- 2. one class's recall, globally important units excluded ---------------------
    c = opts.recall_class
    vsel, tsel = setup.y_val == c, setup.y_test == c
    recall = Scenario(
        f"recall_{c}",
        f"recall of class {setup.classes[c]}",
        ClassRecall(c),
        setup.x_val[vsel],
        setup.y_val[vsel],
        [QuantityPart(setup.x_val[vsel], c)],
        setup.x_test[tsel],
        setup.y_test[tsel],
        exclude_top_fraction=opts.exclude_fraction,
    )
    frac = opts.exclude_fraction
    excl = {m: top_fraction(s, frac) for m, s in q_overall["_scores"].items()}
    shap_excl = [top_fraction(r.result.flat_values.double(), frac) for r in runs0]
    # the exclusion of random removal and the greedy searches: Shapley's (seed 0)
    # top units, or, without a Shapley estimate, the first method that has one
    shared = next(
        (m for m in ("shapley", "grad-x-act", "influence", "conductance") if m in excl),
        None,
    )
    excl["shapley"] = excl[shared] if shared else []
    shap_excl = [
        ex if r.result.n_permutations > 0 else excl["shapley"]
        for r, ex in zip(runs0, shap_excl)
    ]
    q_recall = _question(ctx, recall, 0.5, False, base, excl, shap_excl)
    # how specific the removed units are: the other classes' accuracy
    others = setup.y_test != c
    if bool(others.any()):
        kq = q_recall["k"]
        g_other = ctx.fs.game(
            setup.x_test[others],
            target=setup.y_test[others],
            layer_baselines=base,
            perturbations_per_eval=opts.perturbations_per_eval,
        )
        first = {m: os_[0] for m, os_ in q_recall["_orders"].items()}
        vals = prefix_curves(g_other, first, [0, kq])
        q_recall["other_classes_accuracy"] = {
            "k": kq,
            "intact": next(iter(vals.values()))[0],
            **{m: v[1] for m, v in vals.items()},
        }

    # -- 3. class A versus class B -------------------------------------------------
    a, b = opts.pair
    vpair = (setup.y_val == a) | (setup.y_val == b)
    tpair = (setup.y_test == a) | (setup.y_test == b)
    pair = Scenario(
        f"pair_{a}_{b}",
        f"class {setup.classes[a]} versus {setup.classes[b]}",
        PairAccuracy(a, b),
        setup.x_val[vpair],
        setup.y_val[vpair],
        [
            QuantityPart(setup.x_val[setup.y_val == a], contrast=(a, b)),
            QuantityPart(setup.x_val[setup.y_val == b], contrast=(b, a)),
        ],
        setup.x_test[tpair],
        setup.y_test[tpair],
    )
    q_pair = _question(ctx, pair, 1.0, False, base)

    questions = {"overall": q_overall, recall.name: q_recall, pair.name: q_pair}
    metrics = {
        "overall": opts.metric,
        recall.name: f"recall of {setup.classes[c]}",
        pair.name: f"{setup.classes[a]}-vs-{setup.classes[b]} accuracy",
    }
    for key, q in questions.items():
        q["metric"] = metrics[key]

    # -- truncated Monte Carlo with the bandit off (same chains) ----------------
    plain_info: Dict[str, Any] = {"ran": False}
    n_chains = runs0[0].result.n_permutations
    if opts.quick or not opts.plain_tmc:
        plain_info["reason"] = "not run with --quick"
    elif n_chains < 1:
        plain_info["reason"] = "the bandit completed no chain"
    else:
        with count_cost(model) as c_plain:
            plain = ctx.fs.attribute(
                setup.x_val,
                target=setup.y_val,
                metric=metric,
                top_k=None,
                epsilon=0.0,
                seed=0,
                max_permutations=n_chains,
                perturbations_per_eval=opts.perturbations_per_eval,
                return_result=True,
            )
        plain_info = {
            "ran": True,
            "chains_requested": n_chains,
            "chains": plain.n_permutations,
            "evaluations": plain.n_evaluations,
            "wall_s": round(c_plain.wall_s, 2),
            "bandit_evaluations": runs0[0].result.n_evaluations,
        }
        log(f"plain TMC: {plain.n_evaluations} evaluations, {c_plain.wall_s:.0f} s")

    # -- figures ------------------------------------------------------------------
    log("figures")
    res0 = runs0[0].result
    k = q_overall["k"]
    figs = {
        "removal_curves": figures.plot_removal_curves(
            {q["title"]: q for q in questions.values()}, out / "removal_curves.png"
        ),
        "top_units_by_layer": figures.plot_top_units_by_layer(
            {m: s for m, s in q_overall["_scores"].items()},
            setup.layer_names,
            [lay.n_units for lay in res0.layers],
            k,
            out / "top_units_by_layer.png",
        ),
        "shapley_values": figures.plot_shapley_values(res0, out / "shapley_values.png"),
    }
    picture = _conductance_picture(ctx, setup, res0, q_overall, out)
    if picture is not None:
        figs["conductance_top_unit"], unit = picture
    else:
        unit = None

    # -- summary ------------------------------------------------------------------
    def public(q: Dict[str, Any]) -> Dict[str, Any]:
        return {key: v for key, v in q.items() if not key.startswith("_")}

    summary: Dict[str, Any] = {
        "command": opts.command,
        "setup": setup.description,
        "machine": platform.platform(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "layers": setup.layer_names,
        "n_units": res0.n_units,
        "k": k,
        "K": q_overall["K"],
        "quick": opts.quick,
        "seeds": opts.seeds,
        "random_seeds": opts.random_seeds,
        "n_steps": opts.n_steps,
        "time_budget_s": opts.time_budget,
        "perturbations_per_eval": opts.perturbations_per_eval,
        "full_greedy_max_evaluations": opts.full_greedy_max_evaluations,
        "recall_excluded_fraction": opts.exclude_fraction,
        "questions": {key: public(q) for key, q in questions.items()},
        "plain_tmc": plain_info,
        "conductance_picture_unit": unit,
        "figures": {name: p.name for name, p in figs.items()},
    }
    summary["total_wall_s"] = round(time.perf_counter() - t0, 1)
    text, headline = render(summary)
    (out / "results.json").write_text(json.dumps(_finite(summary), indent=2))
    (out / "report.md").write_text(text)
    summary["headline"] = headline
    return summary


def _conductance_picture(ctx, setup, res0, q_overall, out):
    r"""Neuron conductance through the top Shapley unit for a few test images,
    when one ``NeuronConductance`` call per position of the channel is cheap
    enough (its cost is estimated from gradient x activation's)."""
    if res0.n_permutations == 0:
        return None
    top_unit = int(ranking(res0.flat_values)[0])
    layer_name, channel = res0.unit(top_unit)
    lay = res0.layers[[la.name for la in res0.layers].index(layer_name)]
    n_pic = 6
    positions = int(torch.Size(lay.out_shape[1:]).numel())
    if positions > 256:
        return None
    gxa = q_overall["costs"].get("grad-x-act")
    if ctx.opts.time_budget is not None:
        if not gxa or not gxa["forward_examples"]:
            return None
        per_example = gxa["wall_s"] / gxa["forward_examples"]
        estimate = per_example * positions * n_pic * ctx.opts.n_steps
        left = ctx.plan.left()
        if left is not None and estimate > max(left, 0.0) + 0.5 * ctx.plan.reserve_s:
            return None
    maps = neuron_conductance_map(
        ctx.model,
        ctx.model.get_submodule(layer_name),
        channel,
        setup.x_test[:n_pic],
        setup.y_test[:n_pic],
        n_steps=ctx.opts.n_steps,
    )
    path = figures.plot_conductance_map(
        setup.x_test[:n_pic],
        maps,
        f"Neuron conductance through the top Shapley unit {layer_name}[{channel}]"
        " (red: raises the true class's score)",
        out / "conductance_top_unit.png",
        [f"label {setup.classes[int(t)]}" for t in setup.y_test[:n_pic]],
    )
    return path, [layer_name, channel]


def _finite(x: Any) -> Any:
    r"""JSON has no NaN: ``nan`` and infinities become None."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x
