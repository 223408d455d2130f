r"""The paper's four applications, reproduced on models where their effects can
show, against gradient rankings of the same target quantity.

``python -m comparisons --applications [--quick] [--out DIR]`` runs, on the
embedded digits (nothing downloaded):

1. **overall accuracy** (:class:`~captum_neuron_shapley.examples.DigitsResNet`,
   336 filters): Shapley values for accuracy with the top-``k`` rule and the
   greedy removal set, against random removal;
2. **class-specific**: the recall game of one class, the global top 20% of
   units for accuracy excluded (:func:`class_specific_units`); in the full run
   every class, so that the headline class is not a lucky pick;
3. **fairness**: a ResNet trained with bold digits (a thick-marker rendering)
   at 1% of training, whose held-out bold digits are recognised far worse;
   removing the units that hurt them (:func:`fairness_repair`);
4. **adversarial**: targeted PGD towards random classes crafted against the
   intact model; removing the units the attack relies on
   (:func:`adversarial_repair`), then a fresh attack on the repaired model and a
   transfer attack crafted on another architecture (the digits CNN).

For each, the same units are ranked by conductance, gradient x activation and
distributional influence *of the same target quantity* (class score, subgroup
log-likelihood, adversarial log-likelihood), the same numbers of units are
removed on the held-out split, and the winner at each ``k`` is reported. In
the full run the best gradient ranking is also given the same greedy set
search over its own candidates, to tell what the Shapley values contribute
from what the search does.

Writes ``applications.md``, ``applications.json`` and one figure per
application into the output folder (beside ``report.md``).
"""

from __future__ import annotations

import hashlib
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from captum_neuron_shapley import FilterShapley, ShapleyResult
from captum_neuron_shapley.ablation import metric_after_removal, remove_units
from captum_neuron_shapley.applications import (
    adversarial_repair,
    AdversarialVulnerability,
    attack_success,
    class_specific_units,
    fairness_repair,
    pgd_attack,
)
from captum_neuron_shapley.metrics import (
    Accuracy,
    ClassRecall,
    Metric,
    SubgroupAccuracy,
)
from captum_neuron_shapley.refine import greedy_removal
from torch import nn, Tensor

from . import baselines as B
from .cost import Cost, count_cost

__all__ = [
    "PAPER",
    "AppOptions",
    "run_applications",
    "render_applications",
    "plot_application",
    "GRADIENT_METHODS",
    "RecallMinusOthers",
]

#: The paper's figures (Ghorbani & Zou 2020), for the table's paper column.
PAPER = {
    "overall": "Inception-v3 (17,216 filters): top-10 filters 74% -> 38%, "
    "top-20 -> 8%; random removal changes nothing",
    "class": "removing the top 40 filters of one class (global top 20% "
    "excluded) collapses its recall; overall accuracy intact",
    "fairness": "SqueezeNet (2,976 filters): black-female accuracy 54.7% -> "
    "81.9% by removing the most negative filters; males and CelebA drop a "
    "little",
    "adversarial": "Inception-v3: targeted PGD success ~100% -> 0.1% with the "
    "top 16 removed, clean 74% -> 67%; a fresh attack still works; black-box "
    "transfer success -37% on average",
}

#: Gradient rankings of the target quantity (Captum-based, comparisons.baselines).
GRADIENT_METHODS = ("conductance", "grad-x-act", "influence")

SHAPLEY_VALUE = "shapley (by value)"
SHAPLEY_SET = "shapley (removal set)"
#: Not a method: the greedy set search run on the *test* split itself, the best
#: k-unit removal it finds with the test labels (how much room the setup leaves).
ORACLE = "oracle (greedy on test)"


@dataclass
class AppOptions:
    r"""Settings of :func:`run_applications`.

    Attributes:
        out (Path): Output folder.
        quick (bool): Small budgets (a few minutes on 2 cores).
        k (int): Units removed in the headline (the removal set's size).
        ks (tuple of int): Points of the removal curves.
        max_evaluations (int): Shapley budget per game (coalitions).
        adversarial_max_evaluations (int): The adversarial game's budget (its
            chains are not truncated: each is a full pass over the units).
        refine_pool_factor (int): Candidates of the greedy set searches, in
            multiples of ``k``.
        random_seeds (int): Random removal orders.
        n_steps (int): Integration points of conductance.
        recall_class (int): The headline class.
        all_classes (bool): Also run the class question for every class.
        bold_fraction (float): Share of bold digits in the fairness model's
            training data.
        eps (float): L-inf radius of the attacks.
        step_num (int): PGD steps.
        adversarial_subset (int or None): Examples per chain in the adversarial
            game (clean + adversarial estimation examples are 794).
        refine_gradient (bool): Give the best gradient ranking the same greedy
            search over its own candidates.
        oracle (bool): For the class and fairness questions, run the greedy
            search on the test split itself over every candidate unit: not a
            method (it uses the test labels) but the room the setup leaves.
        max_test (int or None): Use only the first ``max_test`` test digits
            (tests use it to stay fast).
        max_val (int or None): Likewise for the validation digits.
        command (str): The command line, for the report.
    """

    out: Path
    quick: bool = False
    k: int = 10
    ks: Tuple[int, ...] = (1, 2, 5, 10, 20)
    max_evaluations: int = 4000
    adversarial_max_evaluations: int = 6000
    refine_pool_factor: int = 6
    random_seeds: int = 10
    n_steps: int = 20
    recall_class: int = 8
    all_classes: bool = True
    bold_fraction: float = 0.01
    eps: float = 0.3
    step_num: int = 20
    adversarial_subset: Optional[int] = 128
    refine_gradient: bool = True
    oracle: bool = True
    max_test: Optional[int] = None
    max_val: Optional[int] = None
    command: str = "python -m comparisons --applications"

    @classmethod
    def quick_defaults(cls, out: Path, **kw: Any) -> "AppOptions":
        r"""The ``--quick`` settings."""
        base = dict(
            quick=True,
            max_evaluations=1000,
            adversarial_max_evaluations=2000,
            refine_pool_factor=3,
            random_seeds=5,
            n_steps=10,
            all_classes=False,
            adversarial_subset=64,
            refine_gradient=False,
            oracle=False,
            command="python -m comparisons --applications --quick",
        )
        base.update(kw)
        return cls(out=out, **base)


# -- small helpers -------------------------------------------------------------


class RecallMinusOthers(Metric):
    r"""Recall of class ``cls`` minus the accuracy on the examples of the other
    classes: low when the class collapses *and* the rest of the model is intact,
    the class-specific question's two halves in one number (the way
    :class:`AdversarialVulnerability` weighs attack success against clean
    accuracy)."""

    bounds = (-1.0, 1.0)

    def __init__(self, cls: int) -> None:
        self.cls = int(cls)

    def batched(self, outputs: Tensor, target: Any) -> Tensor:
        hit = (outputs.argmax(-1) == target).to(torch.float64)
        sel = target == self.cls
        return hit[:, sel].mean(-1) - hit[:, ~sel].mean(-1)

    def __repr__(self) -> str:
        return f"RecallMinusOthers(cls={self.cls})"


def fingerprint(model: nn.Module) -> str:
    r"""SHA-256 (first 16 hex digits) of the model's state dict: which weights a
    report's numbers belong to."""
    h = hashlib.sha256()
    for key, val in model.state_dict().items():
        h.update(key.encode())
        h.update(val.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _units(res: ShapleyResult, flat: Sequence[int]) -> List[List[Any]]:
    return [list(res.unit(int(i))) for i in flat]


def _order(scores: Tensor, ascending: bool, exclude: Sequence[int] = ()) -> List[int]:
    s = scores.detach().double().cpu()
    order = torch.from_numpy((s if ascending else -s).numpy().argsort(kind="stable"))
    drop = set(int(i) for i in exclude)
    return [int(i) for i in order if int(i) not in drop]


def _random_orders(pool: Sequence[int], seeds: int, length: int) -> List[List[int]]:
    pool = list(pool)
    out = []
    for s in range(seeds):
        g = torch.Generator().manual_seed(1000 + s)
        perm = torch.randperm(len(pool), generator=g)[:length]
        out.append([pool[int(i)] for i in perm])
    return out


def _gradient_scores(
    model: nn.Module,
    layers: List[nn.Module],
    inputs: Tensor,
    target: Any,
    quantity: Optional[Callable],
    n_steps: int,
) -> Tuple[Dict[str, Tensor], Dict[str, Cost]]:
    r"""Conductance, gradient x activation and distributional influence of the
    same quantity, each timed and counted."""
    runners = {
        "conductance": lambda: B.layer_conductance(
            model, layers, inputs, target, n_steps=n_steps, quantity=quantity
        ),
        "grad-x-act": lambda: B.gradient_x_activation(
            model, layers, inputs, target, quantity=quantity
        ),
        "influence": lambda: B.distributional_influence(
            model, layers, inputs, target, quantity=quantity
        ),
    }
    scores, costs = {}, {}
    for name in GRADIENT_METHODS:
        with count_cost(model) as c:
            scores[name] = runners[name]()
        costs[name] = c
    return scores, costs


@dataclass
class _Judge:
    r"""How one application is judged on held-out data."""

    primary: str  # the metric that decides the winner
    goal: str  # "lower" or "raise": what removal should do to it
    metrics: Dict[str, Tuple[Callable, Tensor, Any]]  # name -> metric, inputs, target
    winner_metric: Optional[str] = None  # default: primary
    cost_metric: Optional[str] = None  # what the removal costs (shown beside)

    def evaluate(
        self, model: nn.Module, res: ShapleyResult, sets: List[List[int]]
    ) -> Dict[str, List[float]]:
        return {
            name: metric_after_removal(model, res, sets, x, t, m).tolist()
            for name, (m, x, t) in self.metrics.items()
        }


@dataclass
class _Ctx:
    opts: AppOptions
    log: Callable[[str], None]
    data: Dict[str, Any] = field(default_factory=dict)


def _curves(
    model: nn.Module,
    res: ShapleyResult,
    judge: _Judge,
    orders: Dict[str, List[int]],
    random_orders: List[List[int]],
    ks: Sequence[int],
) -> Tuple[Dict[str, Dict[str, List[Optional[float]]]], Dict[str, Any]]:
    r"""Every method's removal curves (``None`` where its order is shorter than
    ``k``) and random removal's, in one batch of evaluations per metric."""
    sets, where = [], []
    for name, order in orders.items():
        for j, k in enumerate(ks):
            if k <= len(order):
                where.append((name, j))
                sets.append(order[:k])
    n_named = len(sets)
    for order in random_orders:
        sets += [order[:k] for k in ks]
    vals = judge.evaluate(model, res, [[]] + sets)
    curves: Dict[str, Dict[str, List[Optional[float]]]] = {
        name: {m: [None] * len(ks) for m in judge.metrics} for name in orders
    }
    for m, v in vals.items():
        for (name, j), val in zip(where, v[1 : 1 + n_named]):
            curves[name][m][j] = val
    rnd: Dict[str, Any] = {"curves": {}, "mean": {}, "median": {}, "min": {}, "max": {}}
    for m, v in vals.items():
        if not random_orders:
            break
        rows = torch.tensor(v[1 + n_named :], dtype=torch.float64).view(
            len(random_orders), len(ks)
        )
        rnd["curves"][m] = rows.tolist()
        rnd["mean"][m] = rows.mean(0).tolist()
        rnd["median"][m] = rows.median(0).values.tolist()
        rnd["min"][m] = rows.min(0).values.tolist()
        rnd["max"][m] = rows.max(0).values.tolist()
    before = {m: v[0] for m, v in vals.items()}
    return curves, {"random": rnd, "before": before}


def _winners(
    curves: Dict[str, Dict[str, List[Optional[float]]]],
    metric: str,
    goal: str,
    ks: Sequence[int],
) -> Dict[str, List[str]]:
    out = {}
    for j, k in enumerate(ks):
        vals = {
            n: c[metric][j]
            for n, c in curves.items()
            if c[metric][j] is not None and n != ORACLE
        }
        if not vals:
            continue
        best = (min if goal == "lower" else max)(vals.values())
        out[str(k)] = [n for n, v in vals.items() if abs(v - best) < 1e-12]
    return out


def _best_gradient(
    curves: Dict[str, Dict[str, List[Optional[float]]]],
    metric: str,
    goal: str,
    j: int,
) -> str:
    vals = {m: curves[m][metric][j] for m in GRADIENT_METHODS}
    pick = min if goal == "lower" else max
    return pick(vals, key=lambda m: (vals[m], GRADIENT_METHODS.index(m)))


def _refine_gradient(
    ctx: _Ctx,
    app: Dict[str, Any],
    judge: _Judge,
    model: nn.Module,
    res: ShapleyResult,
    game_args: Tuple[Any, Any, Callable],
    orders: Dict[str, List[int]],
    goal: str,
) -> None:
    r"""The same greedy search as the Shapley removal set, over the best gradient
    ranking's own candidates; added to ``orders`` as ``"<method> + greedy"``."""
    opts = ctx.opts
    ks = list(app["ks"])
    j = ks.index(opts.k)
    best = _best_gradient(
        app["curves"], judge.winner_metric or judge.primary, judge.goal, j
    )
    with count_cost(model) as c:
        game = _same_game(model, res, game_args)
        units, _ = greedy_removal(
            game, orders[best], opts.k, opts.refine_pool_factor * opts.k, goal=goal
        )
    c.model_evaluations = game.n_evaluations
    name = f"{best} + greedy"
    orders[name] = units
    app["costs"][name] = c.as_dict()
    ctx.log(f"  {name}: {game.n_evaluations} evaluations, {c.wall_s:.0f}s")


def _same_game(
    model: nn.Module, res: ShapleyResult, data: Tuple[Any, Any, Callable]
) -> Any:
    r"""The game ``res`` was estimated on (its layers and removal baselines), on
    the data ``(inputs, target, metric)``."""
    x, t, metric = data
    layers = [model.get_submodule(lay.name) for lay in res.layers]
    return FilterShapley(model, layers).game(
        x,
        target=t,
        metric=metric,
        layer_baselines=tuple(lay.baseline for lay in res.layers),
        perturbations_per_eval=8,
    )


def _oracle(
    ctx: _Ctx,
    app: Dict[str, Any],
    model: nn.Module,
    res: ShapleyResult,
    test_game: Tuple[Any, Any, Callable],
    pool: List[int],
    goal: str,
) -> List[int]:
    r"""The greedy search on the test split over every candidate unit."""
    with count_cost(model) as c:
        game = _same_game(model, res, test_game)
        units, _ = greedy_removal(game, pool, ctx.opts.k, len(pool), goal=goal)
    c.model_evaluations = game.n_evaluations
    app["costs"][ORACLE] = c.as_dict()
    ctx.log(f"  {ORACLE}: {game.n_evaluations} evaluations, {c.wall_s:.0f}s")
    return units


def _finish(
    ctx: _Ctx,
    app: Dict[str, Any],
    judge: _Judge,
    model: nn.Module,
    res: ShapleyResult,
    orders: Dict[str, List[int]],
    random_orders: List[List[int]],
    game_args: Optional[Tuple[Any, Any, Callable]] = None,
    refine_goal: str = "lower",
    oracle: Optional[Tuple[Tuple[Any, Any, Callable], List[int]]] = None,
) -> None:
    r"""Curves, winners and the stored orders of one application."""
    ks = list(app["ks"])
    if oracle is not None and ctx.opts.oracle:
        orders[ORACLE] = _oracle(
            ctx, app, model, res, oracle[0], oracle[1], refine_goal
        )
    curves, more = _curves(model, res, judge, orders, random_orders, ks)
    app["curves"] = curves
    if game_args is not None and ctx.opts.refine_gradient:
        _refine_gradient(ctx, app, judge, model, res, game_args, orders, refine_goal)
        name = list(orders)[-1]
        extra_curves, _ = _curves(model, res, judge, {name: orders[name]}, [], ks)
        curves.update(extra_curves)
    app["before"] = more["before"]
    app["random"] = more["random"]
    app["orders"] = {name: _units(res, o) for name, o in orders.items()}
    app["random_orders"] = [_units(res, o) for o in random_orders]
    wm = judge.winner_metric or judge.primary
    app["winner_metric"] = wm
    app["winners"] = _winners(curves, wm, judge.goal, ks)
    app["winners_primary"] = _winners(curves, judge.primary, judge.goal, ks)
    app["cost_metric"] = judge.cost_metric
    app["primary"] = judge.primary
    app["goal"] = judge.goal
    app["metrics"] = list(judge.metrics)


# -- the four applications -----------------------------------------------------


def _shapley_kw(opts: AppOptions) -> Dict[str, Any]:
    return dict(max_evaluations=opts.max_evaluations, perturbations_per_eval=8, seed=0)


def _app_overall(ctx: _Ctx) -> Tuple[Dict[str, Any], ShapleyResult]:
    opts, d = ctx.opts, ctx.data
    model, layers = d["model"], d["layers"]
    x_val, y_val, x_test, y_test = d["x_val"], d["y_val"], d["x_test"], d["y_test"]
    ctx.log("overall accuracy: Shapley values, top-k rule and removal set")
    with count_cost(model) as c:
        res = FilterShapley(model, layers).attribute(
            x_val,
            target=y_val,
            top_k=opts.k,
            refine="greedy",
            refine_pool=opts.refine_pool_factor * opts.k,
            return_result=True,
            **_shapley_kw(opts),
        )
    c.model_evaluations = res.n_evaluations
    ctx.log(f"  {res.n_evaluations} evaluations, {c.wall_s:.0f}s ({res.stop_reason})")
    scores, costs = _gradient_scores(model, layers, x_val, y_val, None, opts.n_steps)
    orders = {
        SHAPLEY_SET: list(res.removal_set or []),
        SHAPLEY_VALUE: _order(res.flat_values, ascending=False),
        **{m: _order(s, ascending=False) for m, s in scores.items()},
    }
    judge = _Judge("accuracy", "lower", {"accuracy": (Accuracy(), x_test, y_test)})
    app = _app_header("overall", "overall accuracy", opts, res, c)
    app["quantity"] = "score of each example's true class (the logit), on validation"
    app["costs"].update({m: cc.as_dict() for m, cc in costs.items()})
    app["baseline_data"] = "val"
    app["model"] = "resnet"
    rnd = _random_orders(range(res.n_units), opts.random_seeds, max(app["ks"]))
    _finish(
        ctx, app, judge, model, res, orders, rnd, (x_val, y_val, Accuracy()), "lower"
    )
    return app, res


def _app_class(ctx: _Ctx, acc: ShapleyResult, cls: int, full: bool) -> Dict[str, Any]:
    opts, d = ctx.opts, ctx.data
    model, layers = d["model"], d["layers"]
    x_val, y_val, x_test, y_test = d["x_val"], d["y_val"], d["x_test"], d["y_test"]
    ctx.log(f"class {cls}: recall game, global top 20% excluded")
    with count_cost(model) as c:
        rep = class_specific_units(
            model,
            layers,
            x_val,
            y_val,
            cls,
            x_test,
            y_test,
            n_remove=opts.k,
            accuracy_result=acc,
            refine="greedy",
            refine_pool=opts.refine_pool_factor * opts.k,
            top_k=opts.k,
            **_shapley_kw(opts),
        )
    c.model_evaluations = rep.n_evaluations
    res = rep.result
    ctx.log(f"  {rep.n_evaluations} evaluations, {c.wall_s:.0f}s ({res.stop_reason})")
    excluded = rep.extra["excluded"]
    summary = {
        "class": cls,
        "before": rep.before,
        "after_set": rep.after,
        "evaluations": rep.n_evaluations,
        "wall_s": round(c.wall_s, 2),
        "stop_reason": res.stop_reason,
        "removed": _units(res, rep.removed),
    }
    if not full:
        return summary
    sel = y_val == cls
    scores, costs = _gradient_scores(model, layers, x_val[sel], cls, None, opts.n_steps)
    orders = {
        SHAPLEY_SET: list(rep.removed),
        SHAPLEY_VALUE: _order(res.flat_values, False, excluded),
        **{m: _order(s, False, excluded) for m, s in scores.items()},
    }
    others = y_test != cls
    judge = _Judge(
        "recall",
        "lower",
        {
            "recall": (ClassRecall(cls), x_test, y_test),
            "accuracy_other_classes": (SubgroupAccuracy(), x_test, (y_test, others)),
            "accuracy": (Accuracy(), x_test, y_test),
            "recall_minus_others": (RecallMinusOthers(cls), x_test, y_test),
        },
        winner_metric="recall_minus_others",
        cost_metric="accuracy_other_classes",
    )
    app = _app_header("class", f"class {cls} (recall)", opts, res, c)
    app["n_evaluations"] = rep.n_evaluations
    app["quantity"] = f"score of class {cls} (its logit), on its validation examples"
    app["excluded"] = _units(res, excluded)
    app["costs"].update({m: cc.as_dict() for m, cc in costs.items()})
    app["baseline_data"] = "val"
    app["model"] = "resnet"
    app["class"] = cls
    app["library_report"] = {"before": rep.before, "after": rep.after}
    pool = [i for i in range(res.n_units) if i not in set(excluded)]
    rnd = _random_orders(pool, opts.random_seeds, max(app["ks"]))
    tsel = y_test == cls
    _finish(
        ctx,
        app,
        judge,
        model,
        res,
        orders,
        rnd,
        (x_val[sel], y_val[sel], ClassRecall(cls)),
        "lower",
        ((x_test[tsel], y_test[tsel], ClassRecall(cls)), pool),
    )
    return app


def _app_fairness(ctx: _Ctx) -> Dict[str, Any]:
    opts, d = ctx.opts, ctx.data
    model, layers, s = d["bold_model"], d["bold_layers"], d["bold"]
    ctx.log("fairness: bold digits under-represented in training")
    x_val, y_val, g_val = s.x_val, s.y_val, s.g_val
    x_test, y_test, g_test = s.x_test, s.y_test, s.g_test
    with count_cost(model) as c:
        rep = fairness_repair(
            model,
            layers,
            x_val,
            y_val,
            g_val,
            x_test,
            y_test,
            g_test,
            n_remove=opts.k,
            refine="greedy",
            refine_pool=opts.refine_pool_factor * opts.k,
            **_shapley_kw(opts),
        )
    c.model_evaluations = rep.n_evaluations
    res = rep.result
    ctx.log(f"  {rep.n_evaluations} evaluations, {c.wall_s:.0f}s ({res.stop_reason})")
    xg, yg = x_val[g_val], y_val[g_val]
    scores, costs = _gradient_scores(
        model, layers, xg, yg, B.log_likelihood, opts.n_steps
    )
    orders = {
        SHAPLEY_SET: list(rep.removed),
        SHAPLEY_VALUE: _order(res.flat_values, ascending=True),
        **{m: _order(sc, ascending=True) for m, sc in scores.items()},
    }
    judge = _Judge(
        "subgroup_accuracy",
        "raise",
        {
            "subgroup_accuracy": (SubgroupAccuracy(), x_test, (y_test, g_test)),
            "rest_accuracy": (SubgroupAccuracy(), x_test, (y_test, ~g_test)),
            "accuracy": (Accuracy(), x_test, y_test),
        },
        cost_metric="rest_accuracy",
    )
    app = _app_header("fairness", "fairness (bold digits)", opts, res, c)
    app["n_evaluations"] = rep.n_evaluations
    app["quantity"] = (
        "log-likelihood of the true label (minus the loss) on the bold "
        "validation digits; the lowest-scoring units are removed"
    )
    app["costs"].update({m: cc.as_dict() for m, cc in costs.items()})
    app["baseline_data"] = "bold_val"
    app["model"] = "resnet_bold"
    app["library_report"] = {"before": rep.before, "after": rep.after}
    app["subgroup"] = {
        "train_bold": int(s.g_train.sum()),
        "train": len(s.y_train),
        "val_bold": int(g_val.sum()),
        "test_bold": int(g_test.sum()),
        "test_rest": int((~g_test).sum()),
    }
    rnd = _random_orders(range(res.n_units), opts.random_seeds, max(app["ks"]))
    _finish(
        ctx,
        app,
        judge,
        model,
        res,
        orders,
        rnd,
        (xg, yg, Accuracy()),
        "raise",
        ((x_test[g_test], y_test[g_test], Accuracy()), list(range(res.n_units))),
    )
    return app


def _app_adversarial(ctx: _Ctx) -> Dict[str, Any]:
    opts, d = ctx.opts, ctx.data
    model, layers = d["model"], d["layers"]
    x_val, y_val, x_test, y_test = d["x_val"], d["y_val"], d["x_test"], d["y_test"]
    source = d["transfer_source"]
    ctx.log(f"adversarial: targeted PGD eps={opts.eps}, {opts.step_num} steps")
    kw = _shapley_kw(opts)
    kw["max_evaluations"] = opts.adversarial_max_evaluations
    if opts.adversarial_subset:
        kw["subset_size"] = min(opts.adversarial_subset, 2 * len(y_val))
    with count_cost(model) as c:
        rep = adversarial_repair(
            model,
            layers,
            x_val,
            y_val,
            x_test,
            y_test,
            n_remove=opts.k,
            eps=opts.eps,
            step_num=opts.step_num,
            attack_targets="random",
            transfer_from=source,
            refine="greedy",
            refine_pool=opts.refine_pool_factor * opts.k,
            **kw,
        )
    c.model_evaluations = rep.n_evaluations
    res = rep.result
    ctx.log(f"  {rep.n_evaluations} evaluations, {c.wall_s:.0f}s ({res.stop_reason})")
    att = rep.extra["attacks"]
    adv_v, goal_v = att["estimation"]
    adv_t, goal_t = att["test"]
    x_tr = att["transfer"]
    n_v, n_t = len(y_val), len(y_test)
    # the quantity: log p(attack target | adversarial) - log p(label | clean)
    xq = torch.cat([x_val, adv_v])
    tq = (
        torch.cat([y_val, goal_v]),
        torch.cat([-torch.ones(n_v), torch.ones(n_v)]),
    )
    scores, costs = _gradient_scores(
        model, layers, xq, tq, B.log_likelihood, opts.n_steps
    )
    orders = {
        SHAPLEY_SET: list(rep.removed),
        SHAPLEY_VALUE: _order(res.flat_values, ascending=False),
        **{m: _order(sc, ascending=False) for m, sc in scores.items()},
    }
    flag = torch.arange(2 * n_t) >= n_t
    yy, gg = torch.cat([y_test, y_test]), torch.cat([goal_t, goal_t])
    judge = _Judge(
        "attack_success",
        "lower",
        {
            "attack_success": (
                AdversarialVulnerability(0.0),
                torch.cat([x_test, adv_t]),
                (yy, gg, flag),
            ),
            "clean_accuracy": (Accuracy(), x_test, y_test),
            "vulnerability": (
                AdversarialVulnerability(1.0),
                torch.cat([x_test, adv_t]),
                (yy, gg, flag),
            ),
            "transfer_attack_success": (
                AdversarialVulnerability(0.0),
                torch.cat([x_test, x_tr]),
                (yy, gg, flag),
            ),
        },
        winner_metric="vulnerability",
        cost_metric="clean_accuracy",
    )
    app = _app_header("adversarial", "adversarial robustness", opts, res, c)
    app["n_evaluations"] = rep.n_evaluations
    app["quantity"] = (
        "log-probability of the attack target on the adversarial validation "
        "images minus that of the label on the clean ones (the PGD objective "
        "minus the clean log-likelihood), mirroring the game's metric"
    )
    app["costs"].update({m: cc.as_dict() for m, cc in costs.items()})
    app["baseline_data"] = "val"
    app["model"] = "resnet"
    app["library_report"] = {
        "before": rep.before,
        "after": rep.after,
        "fresh_attack_success": rep.extra["fresh_attack_success"],
    }
    app["attack"] = {
        "eps": opts.eps,
        "step_num": opts.step_num,
        "targets": "random (seed 0 on validation, seed 1 on test)",
        "transfer_source": "DigitsCNN (trained_digits_cnn)",
        "game_subset_size": kw.get("subset_size"),
    }
    rnd = _random_orders(range(res.n_units), opts.random_seeds, max(app["ks"]))
    x_game = torch.cat([x_val, adv_v])
    flag_v = torch.arange(2 * n_v) >= n_v
    t_game = (torch.cat([y_val, y_val]), torch.cat([goal_v, goal_v]), flag_v)
    _finish(
        ctx,
        app,
        judge,
        model,
        res,
        orders,
        rnd,
        (x_game, t_game, AdversarialVulnerability(1.0)),
        "lower",
    )
    # a fresh attack against each method's repaired model (headline k)
    fresh: Dict[str, float] = {"intact": attack_success(model, adv_t, goal_t)}
    for name, order in orders.items():
        if len(order) < opts.k:
            continue
        with remove_units(model, res, order[: opts.k]):
            xf, _ = pgd_attack(
                model, x_test, y_test, opts.eps, opts.step_num, attack_targets=goal_t
            )
            fresh[name] = attack_success(model, xf, goal_t)
    app["fresh_attack_success"] = fresh
    return app


def _app_header(
    key: str, title: str, opts: AppOptions, res: ShapleyResult, cost: Cost
) -> Dict[str, Any]:
    ks = sorted({k for k in opts.ks if k <= res.n_units} | {opts.k})
    return {
        "key": key,
        "title": title,
        "paper": PAPER[key],
        "k": opts.k,
        "ks": ks,
        "n_units": res.n_units,
        "n_evaluations": res.n_evaluations,
        "shapley": {
            "evaluations": res.n_evaluations,
            "refine_evaluations": res.refine_evaluations,
            "permutations": res.n_permutations,
            "stop_reason": res.stop_reason,
            "converged": res.converged,
            "wall_s": round(cost.wall_s, 2),
            "V_all": res.full_value,
            "V_none": res.empty_value,
        },
        "costs": {"shapley": cost.as_dict()},
    }


# -- data, models, running -----------------------------------------------------


def _load(opts: AppOptions) -> Dict[str, Any]:
    from captum_neuron_shapley.examples import (
        bold_minority_splits,
        load_digits_splits,
        trained_digits_cnn,
        trained_digits_resnet,
    )

    s = load_digits_splits()
    b = bold_minority_splits(opts.bold_fraction)
    nv, nt = opts.max_val, opts.max_test
    if nv or nt:  # keep the pairing: first digits as written, then bold
        b = _cut_paired(b, nv, nt)
    model = trained_digits_resnet()
    bold_model = trained_digits_resnet(bold_fraction=opts.bold_fraction)
    source = trained_digits_cnn()
    return {
        "model": model,
        "layers": model.conv_layers,
        "bold_model": bold_model,
        "bold_layers": bold_model.conv_layers,
        "transfer_source": source,
        "x_val": s.x_val[:nv],
        "y_val": s.y_val[:nv],
        "x_test": s.x_test[:nt],
        "y_test": s.y_test[:nt],
        "bold": b,
    }


def _cut_paired(b: Any, nv: Optional[int], nt: Optional[int]) -> Any:
    import dataclasses

    def cut(x, y, g, n):
        if not n:
            return x, y, g
        half = len(y) // 2
        idx = torch.cat([torch.arange(n), half + torch.arange(n)])
        return x[idx], y[idx], g[idx]

    xv, yv, gv = cut(b.x_val, b.y_val, b.g_val, nv)
    xt, yt, gt = cut(b.x_test, b.y_test, b.g_test, nt)
    return dataclasses.replace(
        b, x_val=xv, y_val=yv, g_val=gv, x_test=xt, y_test=yt, g_test=gt
    )


def run_applications(opts: AppOptions) -> Dict[str, Any]:
    r"""Run the four applications, write ``applications.md``,
    ``applications.json`` and the figures into ``opts.out``, and return the
    summary (what the JSON holds).

    Args:
        opts (AppOptions): Settings.

    Returns:
        dict: The summary.
    """
    t0 = time.perf_counter()
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:5.0f}s] {msg}", flush=True)

    ctx = _Ctx(opts, log)
    log("models (trained once, then cached) and data")
    ctx.data = _load(opts)
    d = ctx.data
    apps: Dict[str, Any] = {}
    apps["overall"], acc = _app_overall(ctx)
    apps["class"] = _app_class(ctx, acc, opts.recall_class, full=True)
    classes: List[Dict[str, Any]] = []
    if opts.all_classes:
        for cls in range(10):
            if cls == opts.recall_class:
                continue
            classes.append(_app_class(ctx, acc, cls, full=False))
    apps["class"]["other_classes"] = classes
    apps["fairness"] = _app_fairness(ctx)
    apps["adversarial"] = _app_adversarial(ctx)
    log("figures")
    figs = {}
    for key, app in apps.items():
        figs[key] = plot_application(app, out / f"applications_{key}.png").name
    summary: Dict[str, Any] = {
        "command": opts.command,
        "quick": opts.quick,
        "machine": platform.platform(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "models": {
            "resnet": {
                "description": "DigitsResNet on the plain digits "
                "(trained_digits_resnet())",
                "fingerprint": fingerprint(d["model"]),
            },
            "resnet_bold": {
                "description": "DigitsResNet with bold digits at "
                f"{opts.bold_fraction:.0%} of training "
                f"(trained_digits_resnet(bold_fraction={opts.bold_fraction}))",
                "fingerprint": fingerprint(d["bold_model"]),
            },
            "transfer_source": {
                "description": "DigitsCNN (trained_digits_cnn())",
                "fingerprint": fingerprint(d["transfer_source"]),
            },
        },
        "data": {
            "val": len(d["y_val"]),
            "test": len(d["y_test"]),
            "bold_val": len(d["bold"].y_val),
            "bold_test": len(d["bold"].y_test),
            "max_val": opts.max_val,
            "max_test": opts.max_test,
        },
        "settings": {
            "k": opts.k,
            "max_evaluations": opts.max_evaluations,
            "adversarial_max_evaluations": opts.adversarial_max_evaluations,
            "refine_pool": opts.refine_pool_factor * opts.k,
            "random_seeds": opts.random_seeds,
            "n_steps": opts.n_steps,
            "bold_fraction": opts.bold_fraction,
            "eps": opts.eps,
            "step_num": opts.step_num,
            "refine_gradient": opts.refine_gradient,
            "oracle": opts.oracle,
        },
        "apps": apps,
        "figures": figs,
    }
    summary["total_wall_s"] = round(time.perf_counter() - t0, 1)
    text, table = render_applications(summary)
    (out / "applications.json").write_text(json.dumps(summary, indent=1))
    (out / "applications.md").write_text(text)
    summary["table"] = table
    return summary


# -- rendering -------------------------------------------------------------------


def _f(x: Optional[float], nd: int = 3) -> str:
    return "—" if x is None else f"{x:.{nd}f}"


def _at(app: Dict[str, Any], method: str, metric: str, k: int) -> Optional[float]:
    return app["curves"][method][metric][app["ks"].index(k)]


def _rand_at(app: Dict[str, Any], metric: str, k: int, stat: str = "median") -> float:
    return app["random"][stat][metric][app["ks"].index(k)]


def _who_wins(app: Dict[str, Any], k: int, key: str = "winners") -> str:
    w = app[key].get(str(k), [])
    return " = ".join(w) if w else "—"


def _baseline_cell(app: Dict[str, Any], metric: str, k: int) -> str:
    cost = app.get("cost_metric")

    def one(m: str) -> str:
        txt = f"{m} {_f(_at(app, m, metric, k))}"
        if cost:
            txt += f" ({_short(cost)} {_f(_at(app, m, cost, k))})"
        return txt

    names = list(GRADIENT_METHODS) + [
        m for m in app["curves"] if m.endswith("+ greedy")
    ]
    cell = "; ".join(one(m) for m in names)
    cell += (
        f". Winner at k={k} by {app['primary']}: {_who_wins(app, k, 'winners_primary')}"
    )
    if app["winner_metric"] != app["primary"]:
        cell += f"; by {app['winner_metric']}: {_who_wins(app, k)}"
    return cell


def _short(metric: str) -> str:
    return {
        "accuracy_other_classes": "other classes",
        "rest_accuracy": "rest",
        "clean_accuracy": "clean",
    }.get(metric, metric)


def _here_cell(app: Dict[str, Any]) -> str:
    k, key = app["k"], app["key"]
    b = app["before"]
    if key == "overall":
        return (
            f"accuracy {_f(b['accuracy'])} -> "
            f"{_f(_at(app, SHAPLEY_SET, 'accuracy', k))} (removal set), "
            f"{_f(_at(app, SHAPLEY_VALUE, 'accuracy', k))} (top-{k} by value); "
            f"top-20 by value {_f(_at(app, SHAPLEY_VALUE, 'accuracy', 20))}"
            f"; {k} random: {_f(_rand_at(app, 'accuracy', k))} (median of "
            f"{len(app['random_orders'])})"
            if 20 in app["ks"]
            else f"accuracy {_f(b['accuracy'])} -> "
            f"{_f(_at(app, SHAPLEY_SET, 'accuracy', k))} (removal set), "
            f"{_f(_at(app, SHAPLEY_VALUE, 'accuracy', k))} (by value); random "
            f"{_f(_rand_at(app, 'accuracy', k))}"
        )
    if key == "class":
        c = app["class"]
        k2 = max(app["ks"])
        return (
            f"class {c} recall {_f(b['recall'])} -> "
            f"{_f(_at(app, SHAPLEY_SET, 'recall', k))} (removal set; other classes "
            f"{_f(b['accuracy_other_classes'])} -> "
            f"{_f(_at(app, SHAPLEY_SET, 'accuracy_other_classes', k))}), "
            f"{_f(_at(app, SHAPLEY_VALUE, 'recall', k))} by value (other classes "
            f"{_f(_at(app, SHAPLEY_VALUE, 'accuracy_other_classes', k))}); top-{k2} "
            f"by value: recall {_f(_at(app, SHAPLEY_VALUE, 'recall', k2))}, other "
            f"classes {_f(_at(app, SHAPLEY_VALUE, 'accuracy_other_classes', k2))}; "
            f"{k} random: recall {_f(_rand_at(app, 'recall', k))}"
            + _oracle_note(app, "recall")
        )
    if key == "fairness":
        return (
            f"bold digits {_f(b['subgroup_accuracy'])} -> "
            f"{_f(_at(app, SHAPLEY_SET, 'subgroup_accuracy', k))} (removal set; rest "
            f"{_f(b['rest_accuracy'])} -> "
            f"{_f(_at(app, SHAPLEY_SET, 'rest_accuracy', k))}, overall "
            f"{_f(b['accuracy'])} -> {_f(_at(app, SHAPLEY_SET, 'accuracy', k))}), "
            f"{_f(_at(app, SHAPLEY_VALUE, 'subgroup_accuracy', k))} with the {k} most "
            f"negative values (rest {_f(_at(app, SHAPLEY_VALUE, 'rest_accuracy', k))})"
            f"; {k} random: {_f(_rand_at(app, 'subgroup_accuracy', k))}"
            + _oracle_note(app, "subgroup_accuracy")
        )
    fr = app["fresh_attack_success"]
    return (
        f"attack success {_f(b['attack_success'])} -> "
        f"{_f(_at(app, SHAPLEY_SET, 'attack_success', k))} (removal set; clean "
        f"{_f(b['clean_accuracy'])} -> "
        f"{_f(_at(app, SHAPLEY_SET, 'clean_accuracy', k))}), "
        f"{_f(_at(app, SHAPLEY_VALUE, 'attack_success', k))} by value (clean "
        f"{_f(_at(app, SHAPLEY_VALUE, 'clean_accuracy', k))}); fresh attack on the "
        f"repaired model {_f(fr.get(SHAPLEY_SET))}; transfer attack from the "
        f"digits CNN {_f(b['transfer_attack_success'])} -> "
        f"{_f(_at(app, SHAPLEY_SET, 'transfer_attack_success', k))}; {k} random: "
        f"{_f(_rand_at(app, 'attack_success', k))}"
    )


def _oracle_note(app: Dict[str, Any], metric: str) -> str:
    if ORACLE not in app["curves"]:
        return ""
    return (
        f"; room left (greedy on the test split itself): "
        f"{_f(_at(app, ORACLE, metric, app['k']))}"
    )


def _headline_rows(s: Dict[str, Any]) -> List[str]:
    rows = [
        "| application | paper | here: before -> after on held-out data | k | "
        "evaluations | wall time | targeted gradient baselines (same k, same "
        "metric) |",
        "|---|---|---|---|---|---|---|",
    ]
    metric_of = {
        "overall": "accuracy",
        "class": "recall",
        "fairness": "subgroup_accuracy",
        "adversarial": "attack_success",
    }
    for key, app in s["apps"].items():
        sh = app["shapley"]
        conv = "" if sh["converged"] else f" (stopped by {sh['stop_reason']})"
        rows.append(
            f"| {app['title']} | {app['paper']} | {_here_cell(app)} | {app['k']} | "
            f"{app['n_evaluations']}{conv} | {app['costs']['shapley']['wall_s']:.0f} s "
            f"| {_baseline_cell(app, metric_of[key], app['k'])} |"
        )
    return rows


def _curve_table(app: Dict[str, Any]) -> List[str]:
    ks = app["ks"]
    metrics = app["metrics"]
    lines = []
    for m in metrics:
        lines += [
            f"{m} (test) after removing each method's first k units "
            + (
                "(winner column: " + app["winner_metric"] + ")"
                if m == metrics[0]
                else ""
            ),
            "",
            "| method | " + " | ".join(f"k={k}" for k in ks) + " |",
            "|---|" + "---|" * len(ks),
            f"| intact | {_f(app['before'][m])} |" + " |" * (len(ks) - 1),
        ]
        for name, c in app["curves"].items():
            lines.append(f"| {name} | " + " | ".join(_f(v) for v in c[m]) + " |")
        r = app["random"]
        lines.append(
            f"| random ({len(app['random_orders'])} orders: median [min, max]) | "
            + " | ".join(
                f"{_f(md)} [{_f(lo)}, {_f(hi)}]"
                for md, lo, hi in zip(r["median"][m], r["min"][m], r["max"][m])
            )
            + " |"
        )
        lines.append("")
    best = "lowest" if app["goal"] == "lower" else "highest"
    for key, metric in (
        ("winners_primary", app["primary"]),
        ("winners", app["winner_metric"]),
    ):
        if key == "winners" and metric == app["primary"]:
            continue
        lines += [
            f"Winner at each k by {metric} ({best} wins): "
            + "; ".join(f"k={k}: {' = '.join(w)}" for k, w in app[key].items()),
            "",
        ]
    return lines


def _cost_table(app: Dict[str, Any]) -> List[str]:
    lines = [
        "| method | wall s | forward passes (examples) | backward passes (examples) "
        "| coalitions evaluated |",
        "|---|---|---|---|---|",
    ]
    for name, c in app["costs"].items():
        lines.append(
            f"| {name} | {c['wall_s']:.2f} | {c['forward_calls']} "
            f"({c['forward_examples']}) | {c['backward_calls']} "
            f"({c['backward_examples']}) | {c['model_evaluations'] or ''} |"
        )
    return lines


def render_applications(s: Dict[str, Any]) -> Tuple[str, str]:
    r"""``(applications.md text, headline table)`` from the summary."""
    table = "\n".join(_headline_rows(s))
    st = s["settings"]
    lines = [
        "# Neuron Shapley: the paper's four applications, against targeted "
        "gradient rankings",
        "",
        f"Command: `{s['command']}`; {s['machine']}, torch {s['torch']}, "
        f"{s['threads']} thread(s); total wall time {s['total_wall_s']} s.",
        "",
        "Models: "
        + "; ".join(
            f"{m['description']} [weights {m['fingerprint']}]"
            for m in s["models"].values()
        )
        + ". Players: every filter of every conv layer (336, shortcut "
        "convolutions included). Values and gradient scores are computed on the "
        "validation digits; every number below is measured on the held-out test "
        f"digits ({s['data']['test']}; bold test: {s['data']['bold_test']}). "
        "Removed units emit their mean activation over the clean validation "
        "digits, for every method.",
        f"Shapley: at most {st['max_evaluations']} coalitions per game "
        f"({st['adversarial_max_evaluations']} for the adversarial one) "
        f"(`perturbations_per_eval=8`, seed 0), the greedy removal set of k = "
        f"{st['k']} searched among the {st['refine_pool']} best candidates by "
        "value (its evaluations included in the counts).",
        "",
        "Two Shapley answers: **by value** (the paper's: the k units with the "
        "highest values, or the most negative for a repair) and the **removal "
        "set** (the k units whose *joint* removal moves the metric most on the "
        "validation data, found greedily among the best candidates by value). "
        "The gradient baselines rank the same units by the same target quantity "
        "and remove the same k (by value)"
        + (
            "; the best of them at k is also given the same greedy search over "
            "its own candidates (`<method> + greedy`)"
            if st["refine_gradient"]
            else ""
        )
        + "."
        + (
            f" `{ORACLE}` is not a method: the same greedy search run on the test "
            "split itself over every candidate, i.e. how far removing k units can "
            "move the test metric at all (the room the setup leaves); it takes "
            "no part in the winners."
            if st["oracle"]
            else ""
        ),
        "",
        table,
        "",
    ]
    for key, app in s["apps"].items():
        sh = app["shapley"]
        lines += [
            f"## {app['title']}",
            "",
            f"Paper: {app['paper']}.",
            "",
            f"Gradient quantity: {app['quantity']}. Shapley: "
            f"{app['n_evaluations']} coalitions, "
            f"{app['costs']['shapley']['wall_s']:.1f} s, "
            f"{sh['permutations']} chains, stopped by {sh['stop_reason']}.",
            "",
        ]
        if key == "class":
            lines += [
                "Every method may not remove the global top 20% of units for "
                "accuracy (by Shapley value, "
                f"{len(app['excluded'])} units): the same candidates for all; "
                "random removal draws from them too. The exclusion reuses the "
                "accuracy run of the overall row (its evaluations and time are not "
                "counted again here). Winners are also judged by recall minus the "
                "other classes' accuracy, so that a ranking cannot win by breaking "
                "every class.",
                "",
            ]
        if key == "fairness":
            g = app["subgroup"]
            lines += [
                f"Training: {g['train_bold']} of {g['train']} digits rendered "
                f"bold (a thick marker). Test: the {g['test_rest']} test digits "
                "as written and the same digits bold. The game is the bold "
                "validation digits' accuracy; the removal set is searched for "
                "the units whose joint removal *raises* it most, among the "
                f"{st['refine_pool']} units with the most negative values.",
                "",
            ]
        if key == "adversarial":
            a = app["attack"]
            fr = app["fresh_attack_success"]
            lines += [
                f"Attack: targeted L-inf PGD, eps {a['eps']}, {a['step_num']} "
                f"steps, targets {a['targets']}, crafted against the intact "
                f"model; transfer attack crafted on the {a['transfer_source']} "
                "with the same targets. Game: success minus clean accuracy on "
                "clean plus adversarial validation digits"
                + (
                    f" ({a['game_subset_size']} per chain)"
                    if a["game_subset_size"]
                    else ""
                )
                + ". Winners by success minus clean accuracy (the game's metric), "
                "so that a method cannot win by breaking the model.",
                "",
                f"Fresh attack (PGD against each repaired model, k={app['k']}): "
                + "; ".join(f"{n} {_f(v)}" for n, v in fr.items()),
                "",
            ]
        lines += _curve_table(app)
        if key == "class" and app.get("other_classes"):
            lines += [
                f"Every class (removal set of {app['k']}, global top 20% "
                "excluded; one recall game each):",
                "",
                "| class | recall before | recall after | other classes before | "
                "other classes after | evaluations | wall s |",
                "|---|---|---|---|---|---|---|",
            ]
            rows = [
                {
                    "class": app["class"],
                    "before": app["library_report"]["before"],
                    "after_set": app["library_report"]["after"],
                    "evaluations": app["n_evaluations"],
                    "wall_s": app["costs"]["shapley"]["wall_s"],
                }
            ] + app["other_classes"]
            for r in sorted(rows, key=lambda r: r["class"]):
                lines.append(
                    f"| {r['class']} | {_f(r['before']['recall'])} | "
                    f"{_f(r['after_set']['recall'])} | "
                    f"{_f(r['before']['accuracy_other_classes'])} | "
                    f"{_f(r['after_set']['accuracy_other_classes'])} | "
                    f"{r['evaluations']} | {r['wall_s']:.1f} |"
                )
            med = statistics.median(r["after_set"]["recall"] for r in rows)
            lines += [
                "",
                f"Median recall after removal over the classes: {_f(med)}.",
                "",
            ]
        lines += ["Cost of each ranking (this run):", "", *_cost_table(app), ""]
        lines += [f"![{app['title']}]({s['figures'][key]})", ""]
    return "\n".join(lines), table


# -- figures ---------------------------------------------------------------------


def plot_application(app: Dict[str, Any], path: Path) -> Path:
    r"""Removal curves of one application: the primary metric and, beside it,
    what the removal costs (one panel per metric), every method and random
    removal (median with min-max band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [
        m for m in app["metrics"] if m not in ("vulnerability", "recall_minus_others")
    ]
    ks = app["ks"]
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(4.6 * len(metrics), 3.8), squeeze=False
    )
    for ax, m in zip(axes[0], metrics):
        for name, c in app["curves"].items():
            pts = [(k, v) for k, v in zip(ks, c[m]) if v is not None]
            style = dict(lw=2.2) if name.startswith("shapley") else dict(lw=1.2)
            ax.plot(
                [0] + [p[0] for p in pts],
                [app["before"][m]] + [p[1] for p in pts],
                marker="o",
                ms=3,
                label=name,
                **style,
            )
        r = app["random"]
        ax.plot(
            [0] + ks,
            [app["before"][m]] + r["median"][m],
            color="k",
            ls="--",
            label="random (median, min-max)",
        )
        ax.fill_between(
            [0] + ks,
            [app["before"][m]] + r["min"][m],
            [app["before"][m]] + r["max"][m],
            color="k",
            alpha=0.12,
        )
        ax.set_xlabel("units removed (k)")
        ax.set_ylabel(f"{m} (test)")
        ax.grid(alpha=0.3)
    axes[0][0].set_title(app["title"], fontsize=10)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main_applications(args: Any, argv: Sequence[str]) -> int:
    r"""``python -m comparisons --applications``: run and print the table."""
    import shlex

    command = " ".join(["python -m comparisons", *map(shlex.quote, argv)])
    out = Path(args.out)
    opts = (
        AppOptions.quick_defaults(out, command=command)
        if args.quick
        else AppOptions(out=out, command=command)
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, args.threads))
    try:
        summary = run_applications(opts)
    finally:
        torch.set_num_threads(threads)
    print()
    print(summary["table"])
    print()
    print(f"total wall time {summary['total_wall_s']} s")
    print(f"wrote {out / 'applications.md'}, {out / 'applications.json'} and figures:")
    for name in summary["figures"].values():
        print(f"  {out / name}")
    sys.stdout.flush()
    return 0
