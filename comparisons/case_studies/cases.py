r"""The paper's four applications, each against gradient rankings of the same
target quantity (one function per case):

1. :func:`overall`: Shapley values for accuracy with the top-``k`` rule and the
   greedy removal set, against random removal;
2. :func:`class_case`: the recall game of one class, the global top 20% of units
   for accuracy excluded (the library's ``class_specific_units``);
3. :func:`fairness`: a ResNet trained with bold digits at 1% of training;
   removing the units that hurt them (``fairness_repair``);
4. :func:`adversarial`: targeted PGD crafted against the intact model; removing
   the units the attack relies on (``adversarial_repair``), then a fresh attack
   on each repaired model and a transfer attack from the digits CNN.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import torch

from captum_neuron_shapley import (
    FilterShapley,
    GreedyRefine,
    PermutationSampler,
    ShapleyResult,
)
from captum_neuron_shapley.ablation import remove_units
from captum_neuron_shapley.applications import (
    adversarial_repair,
    AdversarialVulnerability,
    attack_success,
    class_specific_units,
    fairness_repair,
    pgd_attack,
)
from captum_neuron_shapley.metrics import Accuracy, ClassRecall, SubgroupAccuracy

from ..cost import Cost, count_cost
from ..methods import baselines as B
from .data import Context
from .options import AppOptions, PAPER, SHAPLEY_SET, SHAPLEY_VALUE
from .protocol import (
    gradient_scores,
    Judge,
    order,
    random_orders,
    RecallMinusOthers,
    units,
)
from .searches import judge
from .summary import CaseSummary, ClassRow, Judged, ShapleyInfo

__all__ = ["overall", "class_case", "class_row", "fairness", "adversarial"]


def _shapley_kw(opts: AppOptions) -> Dict[str, Any]:
    return dict(max_evaluations=opts.max_evaluations, perturbations_per_eval=8, seed=0)


def _ks(opts: AppOptions, res: ShapleyResult) -> List[int]:
    return sorted({k for k in opts.ks if k <= res.n_units} | {opts.k})


def _case(
    key: str,
    title: str,
    opts: AppOptions,
    res: ShapleyResult,
    cost: Cost,
    costs: Dict[str, Cost],
    judged: Judged,
    **extra: Any,
) -> CaseSummary:
    r"""A case's summary: its Shapley run, every ranking's cost and how each
    did on the held-out split."""
    return CaseSummary(
        key=key,
        title=title,
        paper=PAPER[key],
        k=opts.k,
        ks=_ks(opts, res),
        n_units=res.n_units,
        n_evaluations=extra.pop("n_evaluations", res.n_evaluations),
        shapley=ShapleyInfo(
            evaluations=res.n_evaluations,
            refine_evaluations=res.refine_evaluations,
            permutations=res.n_permutations,
            stop_reason=res.stop_reason,
            converged=res.converged,
            wall_s=round(cost.wall_s, 2),
            V_all=res.full_value,
            V_none=res.empty_value,
        ),
        # as saved (seconds to the millisecond), so that a saved run renders alike
        costs={m: Cost.from_dict(c.as_dict()) for m, c in costs.items()},
        judged=judged,
        **extra,
    )


def _log_run(ctx: Context, n: int, c: Cost, res: ShapleyResult) -> None:
    ctx.log(f"  {n} evaluations, {c.wall_s:.0f}s ({res.stop_reason})")


def overall(ctx: Context) -> Tuple[CaseSummary, ShapleyResult]:
    r"""Overall accuracy; also returns the accuracy run (the class case excludes
    its top units)."""
    opts, d = ctx.opts, ctx.data
    ctx.log("overall accuracy: Shapley values, top-k rule and removal set")
    with count_cost(d.model) as c:
        res = FilterShapley(d.model, d.layers).attribute(
            d.x_val,
            target=d.y_val,
            top_k=opts.k,
            refine=GreedyRefine(opts.pool),
            return_result=True,
            **_shapley_kw(opts),
        )
    c.model_evaluations = res.n_evaluations
    _log_run(ctx, res.n_evaluations, c, res)
    scores, g_costs = gradient_scores(
        d.model, d.layers, d.x_val, d.y_val, None, opts.n_steps
    )
    orders = {
        SHAPLEY_SET: list(res.removal_set or []),
        SHAPLEY_VALUE: order(res.flat_values, ascending=False),
        **{m: order(s, ascending=False) for m, s in scores.items()},
    }
    j = Judge("accuracy", "lower", {"accuracy": (Accuracy(), d.x_test, d.y_test)})
    costs = {"shapley": c, **g_costs}
    ks = _ks(opts, res)
    rnd = random_orders(range(res.n_units), opts.random_seeds, max(ks))
    judged = judge(
        ctx,
        j,
        d.model,
        res,
        ks,
        orders,
        rnd,
        costs,
        (d.x_val, d.y_val, Accuracy()),
        "lower",
    )
    case = _case(
        "overall",
        "overall accuracy",
        opts,
        res,
        c,
        costs,
        judged,
        quantity="score of each example's true class (the logit), on validation",
        baseline_data="val",
        model="resnet",
    )
    return case, res


def _class_run(ctx: Context, acc: ShapleyResult, cls: int) -> Tuple[Any, Cost]:
    opts, d = ctx.opts, ctx.data
    ctx.log(f"class {cls}: recall game, global top 20% excluded")
    with count_cost(d.model) as c:
        rep = class_specific_units(
            d.model,
            d.layers,
            d.x_val,
            d.y_val,
            cls,
            d.x_test,
            d.y_test,
            n_remove=opts.k,
            accuracy_result=acc,
            refine="greedy",
            refine_pool=opts.pool,
            top_k=opts.k,
            **_shapley_kw(opts),
        )
    c.model_evaluations = rep.n_evaluations
    _log_run(ctx, rep.n_evaluations, c, rep.result)
    return rep, c


def class_row(ctx: Context, acc: ShapleyResult, cls: int) -> ClassRow:
    r"""One row of the every-class table: the class's removal set only."""
    rep, c = _class_run(ctx, acc, cls)
    return ClassRow(
        cls=cls,
        before=rep.before,
        after_set=rep.after,
        evaluations=rep.n_evaluations,
        wall_s=round(c.wall_s, 2),
        stop_reason=rep.result.stop_reason,
        removed=units(rep.result, rep.removed),
    )


def class_case(ctx: Context, acc: ShapleyResult, cls: int) -> CaseSummary:
    r"""One class's recall, judged against every ranking of the same class."""
    opts, d = ctx.opts, ctx.data
    rep, c = _class_run(ctx, acc, cls)
    res = rep.result
    excluded = rep.extra["excluded"]
    sel = d.y_val == cls
    scores, g_costs = gradient_scores(
        d.model, d.layers, d.x_val[sel], cls, None, opts.n_steps
    )
    orders = {
        SHAPLEY_SET: list(rep.removed),
        SHAPLEY_VALUE: order(res.flat_values, False, excluded),
        **{m: order(s, False, excluded) for m, s in scores.items()},
    }
    others = d.y_test != cls
    j = Judge(
        "recall",
        "lower",
        {
            "recall": (ClassRecall(cls), d.x_test, d.y_test),
            "accuracy_other_classes": (
                SubgroupAccuracy(),
                d.x_test,
                (d.y_test, others),
            ),
            "accuracy": (Accuracy(), d.x_test, d.y_test),
            "recall_minus_others": (RecallMinusOthers(cls), d.x_test, d.y_test),
        },
        winner_metric="recall_minus_others",
        cost_metric="accuracy_other_classes",
    )
    costs = {"shapley": c, **g_costs}
    ks = _ks(opts, res)
    pool = [i for i in range(res.n_units) if i not in set(excluded)]
    rnd = random_orders(pool, opts.random_seeds, max(ks))
    tsel = d.y_test == cls
    judged = judge(
        ctx,
        j,
        d.model,
        res,
        ks,
        orders,
        rnd,
        costs,
        (d.x_val[sel], d.y_val[sel], ClassRecall(cls)),
        "lower",
        ((d.x_test[tsel], d.y_test[tsel], ClassRecall(cls)), pool),
    )
    return _case(
        "class",
        f"class {cls} (recall)",
        opts,
        res,
        c,
        costs,
        judged,
        n_evaluations=rep.n_evaluations,
        quantity=f"score of class {cls} (its logit), on its validation examples",
        excluded=units(res, excluded),
        baseline_data="val",
        model="resnet",
        cls=cls,
        library_report={"before": rep.before, "after": rep.after},
    )


def fairness(ctx: Context) -> CaseSummary:
    r"""Bold digits under-represented in training: removing the units with the
    most negative values for them."""
    opts, d = ctx.opts, ctx.data
    model, layers, s = d.bold_model, d.bold_layers, d.bold
    ctx.log("fairness: bold digits under-represented in training")
    with count_cost(model) as c:
        rep = fairness_repair(
            model,
            layers,
            s.x_val,
            s.y_val,
            s.g_val,
            s.x_test,
            s.y_test,
            s.g_test,
            n_remove=opts.k,
            refine="greedy",
            refine_pool=opts.pool,
            **_shapley_kw(opts),
        )
    c.model_evaluations = rep.n_evaluations
    res = rep.result
    _log_run(ctx, rep.n_evaluations, c, res)
    xg, yg = s.x_val[s.g_val], s.y_val[s.g_val]
    scores, g_costs = gradient_scores(
        model, layers, xg, yg, B.log_likelihood, opts.n_steps
    )
    orders = {
        SHAPLEY_SET: list(rep.removed),
        SHAPLEY_VALUE: order(res.flat_values, ascending=True),
        **{m: order(sc, ascending=True) for m, sc in scores.items()},
    }
    xt, yt, gt = s.x_test, s.y_test, s.g_test
    j = Judge(
        "subgroup_accuracy",
        "raise",
        {
            "subgroup_accuracy": (SubgroupAccuracy(), xt, (yt, gt)),
            "rest_accuracy": (SubgroupAccuracy(), xt, (yt, ~gt)),
            "accuracy": (Accuracy(), xt, yt),
        },
        cost_metric="rest_accuracy",
    )
    costs = {"shapley": c, **g_costs}
    ks = _ks(opts, res)
    rnd = random_orders(range(res.n_units), opts.random_seeds, max(ks))
    judged = judge(
        ctx,
        j,
        model,
        res,
        ks,
        orders,
        rnd,
        costs,
        (xg, yg, Accuracy()),
        "raise",
        ((xt[gt], yt[gt], Accuracy()), list(range(res.n_units))),
    )
    return _case(
        "fairness",
        "fairness (bold digits)",
        opts,
        res,
        c,
        costs,
        judged,
        n_evaluations=rep.n_evaluations,
        quantity="log-likelihood of the true label (minus the loss) on the bold "
        "validation digits; the lowest-scoring units are removed",
        baseline_data="bold_val",
        model="resnet_bold",
        library_report={"before": rep.before, "after": rep.after},
        subgroup={
            "train_bold": int(s.g_train.sum()),
            "train": len(s.y_train),
            "val_bold": int(s.g_val.sum()),
            "test_bold": int(gt.sum()),
            "test_rest": int((~gt).sum()),
        },
    )


def _adversarial_run(ctx: Context) -> Tuple[Any, Cost, Dict[str, Any]]:
    opts, d = ctx.opts, ctx.data
    ctx.log(f"adversarial: targeted PGD eps={opts.eps}, {opts.step_num} steps")
    kw: Dict[str, Any] = _shapley_kw(opts)
    kw["max_evaluations"] = opts.adversarial_max_evaluations
    subset = None
    if opts.adversarial_subset:
        subset = min(opts.adversarial_subset, 2 * len(d.y_val))
        kw["sampler"] = PermutationSampler(batch_size=subset)
    with count_cost(d.model) as c:
        rep = adversarial_repair(
            d.model,
            d.layers,
            d.x_val,
            d.y_val,
            d.x_test,
            d.y_test,
            n_remove=opts.k,
            eps=opts.eps,
            step_num=opts.step_num,
            attack_targets="random",
            transfer_from=d.transfer_source,
            refine="greedy",
            refine_pool=opts.pool,
            **kw,
        )
    c.model_evaluations = rep.n_evaluations
    _log_run(ctx, rep.n_evaluations, c, rep.result)
    attack = {
        "eps": opts.eps,
        "step_num": opts.step_num,
        "targets": "random (seed 0 on validation, seed 1 on test)",
        "transfer_source": "DigitsCNN (trained_digits_cnn)",
        "game_subset_size": subset,
    }
    return rep, c, attack


def _adversarial_judge(ctx: Context, att: Dict[str, Any]) -> Judge:
    d = ctx.data
    adv_t, goal_t = att["test"]
    n_t = len(d.y_test)
    flag = torch.arange(2 * n_t) >= n_t
    target = (torch.cat([d.y_test, d.y_test]), torch.cat([goal_t, goal_t]), flag)
    attacked = torch.cat([d.x_test, adv_t])
    return Judge(
        "attack_success",
        "lower",
        {
            "attack_success": (AdversarialVulnerability(0.0), attacked, target),
            "clean_accuracy": (Accuracy(), d.x_test, d.y_test),
            "vulnerability": (AdversarialVulnerability(1.0), attacked, target),
            "transfer_attack_success": (
                AdversarialVulnerability(0.0),
                torch.cat([d.x_test, att["transfer"]]),
                target,
            ),
        },
        winner_metric="vulnerability",
        cost_metric="clean_accuracy",
    )


def _fresh_attacks(
    ctx: Context, res: ShapleyResult, orders: Dict[str, List[int]], att: Any
) -> Dict[str, float]:
    r"""A fresh attack against each method's repaired model (headline k)."""
    opts, d = ctx.opts, ctx.data
    adv_t, goal_t = att["test"]
    fresh: Dict[str, float] = {"intact": attack_success(d.model, adv_t, goal_t)}
    for name, o in orders.items():
        if len(o) < opts.k:
            continue
        with remove_units(d.model, res, o[: opts.k]):
            xf, _ = pgd_attack(
                d.model,
                d.x_test,
                d.y_test,
                opts.eps,
                opts.step_num,
                attack_targets=goal_t,
            )
            fresh[name] = attack_success(d.model, xf, goal_t)
    return fresh


def adversarial(ctx: Context) -> CaseSummary:
    r"""Targeted PGD: removing the units the attack relies on."""
    opts, d = ctx.opts, ctx.data
    rep, c, attack = _adversarial_run(ctx)
    res = rep.result
    att = rep.extra["attacks"]
    adv_v, goal_v = att["estimation"]
    n_v = len(d.y_val)
    # the quantity: log p(attack target | adversarial) - log p(label | clean)
    xq = torch.cat([d.x_val, adv_v])
    tq = (torch.cat([d.y_val, goal_v]), torch.cat([-torch.ones(n_v), torch.ones(n_v)]))
    scores, g_costs = gradient_scores(
        d.model, d.layers, xq, tq, B.log_likelihood, opts.n_steps
    )
    orders = {
        SHAPLEY_SET: list(rep.removed),
        SHAPLEY_VALUE: order(res.flat_values, ascending=False),
        **{m: order(sc, ascending=False) for m, sc in scores.items()},
    }
    costs = {"shapley": c, **g_costs}
    ks = _ks(opts, res)
    rnd = random_orders(range(res.n_units), opts.random_seeds, max(ks))
    flag_v = torch.arange(2 * n_v) >= n_v
    t_game = (torch.cat([d.y_val, d.y_val]), torch.cat([goal_v, goal_v]), flag_v)
    judged = judge(
        ctx,
        _adversarial_judge(ctx, att),
        d.model,
        res,
        ks,
        orders,
        rnd,
        costs,
        (xq, t_game, AdversarialVulnerability(1.0)),
        "lower",
    )
    return _case(
        "adversarial",
        "adversarial robustness",
        opts,
        res,
        c,
        costs,
        judged,
        n_evaluations=rep.n_evaluations,
        quantity="log-probability of the attack target on the adversarial "
        "validation images minus that of the label on the clean ones (the PGD "
        "objective minus the clean log-likelihood), mirroring the game's metric",
        baseline_data="val",
        model="resnet",
        library_report={
            "before": rep.before,
            "after": rep.after,
            "fresh_attack_success": rep.extra["fresh_attack_success"],
        },
        attack=attack,
        fresh_attack_success=_fresh_attacks(ctx, res, orders, att),
    )
